"""The one exception type for mistakes in what the user gave us."""


class UserError(ValueError):
    """Bad input from the user (flags, files, data), as opposed to a bug in this code.

    Raise it with a one-line message that names the offending flag or file and says what to do
    instead. Scripts catch it, print ``error: <message>`` and exit with status 2, without a traceback;
    every other exception is a bug and still raises with its full traceback. It subclasses ValueError
    so that code and tests that expect a ValueError for bad values keep working.
    """
