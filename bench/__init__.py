"""The benchmarks: one script per results file under ``bench/results/``, run from the repository root
as a module (``python -m bench.tasks``, ``python -m bench.compare --config ...``); the renderers that
turn those files into the tables of the docs are :mod:`bench.render` (``python -m bench.render``).

What the scripts share: :mod:`bench._meta` (the provenance every results file records) and
:mod:`bench.aggregate` (what the scripts that read other results files share). bench/README.md lists
every script, its command and its results file.
"""
