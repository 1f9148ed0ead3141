"""Typed errors. The command-line edge turns any `DigitsError` into one `error:` line and exit 2."""


class DigitsError(Exception):
    """Base class for every error caused by the user's input rather than by a bug."""


class DatasetError(DigitsError):
    """A dataset spec, file or array that cannot be used."""


class ModelError(DigitsError):
    """A model name, hyperparameter or model file that cannot be used."""


class ConfigError(DigitsError):
    """A configuration value (flag, TOML key, numeric setting) that cannot be used."""


class CallbackError(DigitsError):
    """A callback spec that names nothing usable, or carries bad arguments."""


class ImageError(DigitsError):
    """An image file for prediction that cannot be read safely."""


class RunDirectoryError(DigitsError):
    """A log or run directory that cannot be created or written."""
