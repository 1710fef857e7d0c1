"""The one exception type that means "the user's input is wrong" (a leaf module).

The CLI prints ``error: <message>`` on one line and exits with status 2 for it;
anything else is a bug and keeps its traceback.
"""


class CaptioningError(ValueError):
    """A user-facing error: the message names the file or field and what to do.

    A ``ValueError``: a wrong value (a setting, a file's content) is what it reports, so code
    that catches ``ValueError`` around a library call keeps working.
    """
