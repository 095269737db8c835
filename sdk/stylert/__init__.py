"""stylert runtime: run exported StyleGAN2-family models on ONNX Runtime. Never imports torch."""
__version__ = "0.1.0"

from .errors import InputError, ModelError, StylertError
from .generator import Generator, to_uint8
from .runtime import OnnxModel, resolve_providers

__all__ = ["Generator", "InputError", "ModelError", "OnnxModel", "StylertError", "resolve_providers", "to_uint8"]
