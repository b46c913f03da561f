"""Errors the user can fix: what the scripts print as one line instead of a traceback."""


class UserError(ValueError):
    """A problem with what the user asked for; its message names the problem and the fix."""
