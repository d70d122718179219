"""The one exception type for errors a user can cause (bad config, missing file, no camera...).

The CLI prints its message on one line and exits with code 2; bugs still raise normally.
"""


class MerClipError(Exception):
    """A problem the user can fix; the message says what and how, in one line."""


def show_value(value: object) -> str:
    """A value for an error message: short, one line."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
