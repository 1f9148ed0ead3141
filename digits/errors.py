"""Typed errors, in two kinds the command-line edge tells apart.

- `DigitsError` and its input subclasses: the user's input cannot be used (a flag, a file, a
  callback spec). One `error:` line, exit 2.
- `RunFailure`: a run that started and then failed (a callback raised, a NaN loss, a search
  stopped for too many failed trials). One `error:` line, exit 1.
"""


class DigitsError(Exception):
    """Base class of every error digits raises on purpose (never a bug)."""


class DatasetError(DigitsError):
    """A dataset spec, file or array that cannot be used."""


class ModelError(DigitsError):
    """A model name, hyperparameter or model file that cannot be used."""


class ConfigError(DigitsError):
    """A configuration value (flag, TOML key, numeric setting) that cannot be used."""


class CallbackSpecError(DigitsError):
    """A callback spec that names nothing usable, or carries bad arguments (input: exit 2)."""


class ImageError(DigitsError):
    """An image file for prediction that cannot be read safely."""


class RunDirectoryError(DigitsError):
    """A log or run directory that cannot be created or written."""


class RunFailure(DigitsError):
    """A run that started and then failed: the command exits 1, not 2."""


class CallbackRaised(RunFailure):
    """A callback raised while the run was going: names the callback and the hook."""

    def __init__(self, callback, hook: str, error: BaseException) -> None:
        from digits.callbacks.registry import label_of

        self.callback_name = label_of(callback)
        self.hook = hook
        self.error = error
        super().__init__(
            f"callback {self.callback_name!r} failed in {hook}: {type(error).__name__}: {error}"
        )


class TrainingStopped(RunFailure):
    """Training stopped on a fault (such as a NaN loss) that the run cannot recover from."""


# The names of digits 0.1, kept for plugins that catch them.
CallbackError = CallbackSpecError
CallbackFailure = CallbackRaised
