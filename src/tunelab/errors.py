"""User-facing errors: the CLI prints them as one short message and exits 2, no traceback."""


class UserError(Exception):
    """A mistake the user can fix (bad config, missing file, bad data). Message says what/where/how."""


class ConfigError(UserError):
    """The experiment file or an override is invalid."""


class DataError(UserError):
    """A data file is missing, unreadable or inconsistent with the task."""


class ModelError(UserError):
    """A model name cannot be resolved or loaded."""
