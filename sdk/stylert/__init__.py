"""stylert runtime: run exported StyleGAN2-family models on ONNX Runtime, OpenVINO or TensorRT. Never imports torch."""
__version__ = "0.1.0"

from .degrade import degrade
from .detect import Face, MTCNNDetector
from .errors import BackendUnavailable, InputError, ModelError, StylertError, UntrainedWeightsWarning
from .imageio import ImageFileError
from .generator import Generator
from .pipeline import FaceResult, NoFaceError, to_uint8
from .restore import Restorer
from .retouch import Retoucher
from .runtime import BACKENDS, Model, open_model, resolve_providers
from .stylize import StylePack, Stylizer, match_histograms

__all__ = ["BACKENDS", "BackendUnavailable", "degrade", "Face", "FaceResult", "Generator", "InputError", "MTCNNDetector",
           "Model", "ModelError", "NoFaceError", "open_model",
           "Restorer", "Retoucher", "StylePack", "StylertError", "Stylizer", "match_histograms", "resolve_providers",
           "to_uint8", "ImageFileError", "UntrainedWeightsWarning"]
