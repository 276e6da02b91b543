"""The engine's own exceptions: each derives from the builtin a caller would expect."""


class TinyVitError(Exception):
    """Base class of every error the engine raises on purpose."""


class WeightsFormatError(TinyVitError, ValueError):
    """A weights or checkpoint file is corrupt, truncated, or not in the format we read."""


class UnsafeCheckpointError(WeightsFormatError):
    """A pickle asked for something outside the allow-list; nothing of it was executed."""


class UnsupportedConfigError(TinyVitError, ValueError):
    """A model config that transformers rejects or that the engine does not support."""


class InputError(TinyVitError, ValueError):
    """pixel_values (or an image) of the wrong shape, dtype or content."""
