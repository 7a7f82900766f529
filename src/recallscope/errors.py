"""One exception type for every input a user got wrong.

The CLI turns a :class:`UserError` into one line on stderr and exit code 2; anything else is a
bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: an unknown model or relation, a malformed file, an out-of-range layer…"""


class OfflineError(UserError):
    """A hub id was asked for and the hub cannot be reached."""
