"""Problems: one record (:class:`problem.Problem`) from every source.

``load.py`` reads a ``data`` config section from whichever source it names (the built-in
benchmarks, your own files, ``hf:`` datasets, reasoning-gym); ``files.py`` reads and validates
your own files row by row; ``gym.py`` draws reasoning-gym problems; ``heldout.py`` is the
problem set an eval runs on (a benchmark, a file, or the pinned held-out set).
"""
