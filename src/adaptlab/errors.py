"""The one exception type that means "the user's input is wrong".

The CLI turns it into a single line on stderr and exit code 2, with no traceback; anything else is a bug
and keeps its traceback. Messages name the file, row, column or option at fault and say what to do.
"""


class AdaptlabError(Exception):
    """Bad input or an impossible request; the message is shown to the user as is."""
