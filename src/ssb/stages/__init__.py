"""The pipeline's stages, one module each: plain functions over a ``Run``. Which stages exist, in what
order, and what each writes is the stage table, ``ssb.rundir.table``."""
