"""The run directory: its config and manifest (``run``), its lock, JSONL and atomic writes, several processes under a launch, and the stage table."""
