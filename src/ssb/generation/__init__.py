"""Generation: conversations in, sampled completions out.

``engine.py`` holds the records and helpers every backend shares (no torch); ``factory.py``
builds the backend ``generation.backend`` names, one module each: ``hf.py`` (the reference,
with ``kv_cache.py``), ``llamacpp.py``, ``vllm.py``.
"""
