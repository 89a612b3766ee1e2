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


def unexpected(exc: BaseException) -> str:
    """What a person reads about a bug (its trace goes to the server log, never to the page)."""
    return f"Unexpected error ({type(exc).__name__}). The server log has the details."
