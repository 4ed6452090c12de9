"""ssb: Semantic Soft Bootstrapping (arXiv 2512.05105), RL-free self-distillation for reasoning.

The Python API (``api.py``, ``docs/api.md``): ``ssb.load_config``, ``ssb.run``, ``ssb.Run``,
``ssb.compare``, imported on first use so that ``import ssb`` stays light (no pydantic, no torch).
"""

__version__ = "0.1.0"

_API = ("Run", "compare", "load_config", "run")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from . import api  # lazy: pydantic (and, once it runs, torch)

        return getattr(api, name)
    raise AttributeError(f"module 'ssb' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
