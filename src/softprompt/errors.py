"""User-facing errors.

Anything a user can fix (a bad path, a malformed row, a wrong setting) raises a
`SoftPromptError` whose message is one line: what was wrong, where, and what was
expected. The CLI prints that line and exits non-zero; tracebacks are kept for bugs.
"""


class SoftPromptError(Exception):
    """Base class for errors caused by user input, not by bugs."""


class DataError(SoftPromptError):
    """A data file is missing, unreadable or malformed (message names file:line)."""


class ModelError(SoftPromptError):
    """A model cannot be found or loaded, or does not match a saved prompt."""


class ConfigError(SoftPromptError):
    """A setting has a value outside what is accepted (message names the setting)."""
