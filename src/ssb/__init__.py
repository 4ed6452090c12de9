"""ssb: Semantic Soft Bootstrapping (arXiv 2512.05105), RL-free self-distillation for reasoning."""

__version__ = "0.1.0"
