"""Errors the runtime raises: each names the file or input and the cause in one line."""


class StylertError(Exception):
    """Base of every error stylert raises on purpose."""


class ModelError(StylertError):
    """A model file is missing, unreadable, not ONNX, for another call, or from an incompatible stylert."""


class InputError(StylertError, ValueError):
    """An input array has the wrong name, dtype, shape or batch, or non-finite values."""


class BackendUnavailable(ModelError):
    """The backend asked for (or chosen) cannot run here: its library or device is missing, or it
    cannot load this graph. Says what to install; `open_model` falls back on it when it may."""


class UntrainedWeightsWarning(UserWarning):
    """A model made with random weights (`--random-init`): its results are noise, for tests and benchmarks."""
