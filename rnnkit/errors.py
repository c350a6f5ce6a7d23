"""The one exception type users see.

Anything the user can fix (a missing file, a bad column name, an absurd
hyper-parameter) raises :class:`RnnkitError` with a one-line message that names
the problem and the fix. The CLI prints it and exits with status 2; programming
errors keep their tracebacks.
"""


class RnnkitError(Exception):
    """A problem with the user's input, with a message that says how to fix it."""

    exit_code = 2
