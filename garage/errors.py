"""The one exception type a person sees.

A ``GarageError`` carries a message written for the user: what was wrong, what
is accepted, what to do. The UI turns it into ``gr.Error``; the CLI prints it
as one line and exits non-zero. Anything else is a bug and goes to the log.
"""


class GarageError(Exception):
    """A problem the user can act on. ``str(err)`` is shown verbatim."""


def is_out_of_memory(exc: BaseException) -> bool:
    """A GPU (or CPU allocator) out-of-memory error, whatever library raised it."""
    return "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError"
