"""The renderers: every benchmark table of the docs, made from its results file.

    python -m bench.render           # rewrite every results block in place
    python -m bench.render --check   # list each stale block and exit 1; 0 when all are current

:mod:`.cli` finds the blocks and holds the table of renderers (``RENDERERS``); one module per results
family renders its blocks (:mod:`.compare`, :mod:`.tasks`, :mod:`.quality`, :mod:`.speed`,
:mod:`.teacher`; :mod:`.config` renders the config reference from the config model, not a results
file), and :mod:`.common` holds what they share: number formats, a markdown table, reading a results
file and the caption that names it.
"""
