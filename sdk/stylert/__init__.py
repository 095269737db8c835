"""stylert runtime: run exported StyleGAN2-family models on ONNX Runtime, OpenVINO or TensorRT. Never imports torch."""
__version__ = "0.1.0"

from .degrade import degrade
from .detect import Face, MTCNNDetector
from .errors import BackendUnavailable, InputError, ModelError, StylertError, UntrainedWeightsWarning
from .generator import Generator
from .imageio import ImageFileError
from .pipeline import FaceResult, NoFaceError, to_uint8
from .restore import Restorer
from .retouch import Retoucher
from .runtime import BACKENDS, Model, open_model, resolve_providers
from .stylize import StylePack, Stylizer, match_histograms

__all__ = ["BACKENDS", "BackendUnavailable", "degrade", "Face", "FaceResult", "Generator", "ImageFileError",
           "InputError", "match_histograms", "Model", "ModelError", "MTCNNDetector", "NoFaceError",
           "open_model", "resolve_providers", "Restorer", "Retoucher", "StylePack", "StylertError",
           "Stylizer", "to_uint8", "UntrainedWeightsWarning"]
