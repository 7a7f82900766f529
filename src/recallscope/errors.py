"""One exception type for every input a user got wrong, and the CLI's exit codes.

The CLI turns a :class:`UserError` into one line on stderr and exit code 2; anything else is a
bug and keeps its traceback.
"""

EXIT_OK = 0
EXIT_BUG = 1  # an uncaught exception (a traceback): a bug in recallscope
EXIT_USER = 2  # bad input: one line on stderr, nothing ran (or the stage asked for by name could not)
EXIT_INCOMPLETE = 3  # a sweep finished, but some cells lacked the data for some stages (see summary.json "incomplete")
EXIT_INTERRUPTED = 130  # Ctrl-C; rerunning the same command resumes


class UserError(Exception):
    """Bad input: an unknown model or relation, a malformed file, an out-of-range layer…"""


class OfflineError(UserError):
    """A hub id was asked for and the hub cannot be reached."""


class NonFiniteError(UserError):
    """A model computed a NaN or an infinity from finite weights and inputs (float16 overflow, a
    degenerate attention row): nothing derived from it can be trusted, so the stage stops. Never
    "not measurable" in a sweep: it is the model, not the cell's data."""
