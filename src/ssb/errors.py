"""The one error base class of the package.

Every error that ssb raises for a user to read (bad config, bad data row, missing run
file, unusable model, ...) derives from :class:`SSBError`. The CLI catches ``SSBError``
in one place and prints its message as one line (a traceback only with ``--debug``);
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SSBError(Exception):
    """An error whose message is meant for the user: what went wrong and what to do."""


class MissingFileError(SSBError, FileNotFoundError):
    """A file or directory a command needs is not there (a run directory, a run's ``pairs.jsonl``, a
    local model path): the message names it and what makes it. Still a ``FileNotFoundError``."""


class ConfigError(SSBError, ValueError):
    """A config that cannot be read or does not validate: the message names each bad key or value and where it was set."""
