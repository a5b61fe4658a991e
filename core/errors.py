"""Errors that reach the user as one clear line (the CLI and dashboard print them as-is)."""


class UserError(Exception):
    """Bad input from the user: names the thing that is wrong and how to fix it."""
