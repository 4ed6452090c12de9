"""``python -m bench.render [--check] [FILES]``: see :mod:`bench.render.cli`."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
