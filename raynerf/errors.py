"""Errors a user can cause (bad data, bad config, bad workdir).

The CLI turns a :class:`RaynerfError` into one ``Error: ...`` line and exit code 1,
never a traceback. Library code raises it with a message that names the file at
fault and says how to fix it.
"""


class RaynerfError(Exception):
    """A problem with the user's input, reported as one clear line."""
