"""stylert runtime: run exported StyleGAN2-family models on ONNX Runtime, OpenVINO or TensorRT. Never imports torch.

Parts: `runtime` (model base, backends), `faces` (detect, align, the whole-photo pipeline, image I/O),
`calls` (retouch, restore, stylize, inpaint, edit, generate), `tools` (bench, graph cost, quantize, engine build,
degradations), `serving` (Ray Serve service, Ray Data batch job), `video` (streams, video files, cameras).
"""
from ._version import __version__
from .calls.edit import Editor
from .calls.generator import Generator
from .calls.inpaint import Inpainter
from .calls.restore import Restorer
from .calls.retouch import Retoucher
from .calls.stylize import StylePack, Stylizer, match_histograms
from .errors import BackendUnavailable, InputError, ModelError, StylertError, UntrainedWeightsWarning
from .faces.detect import Face, MTCNNDetector
from .faces.imageio import ImageFileError
from .faces.pipeline import FaceResult, NoFaceError, to_uint8
from .runtime import BACKENDS, Model, open_model, resolve_providers
from .tools.degrade import degrade
from .video.stream import Stream

__all__ = ["BACKENDS", "BackendUnavailable", "degrade", "Editor", "Face", "FaceResult", "Generator", "ImageFileError",
           "Inpainter", "InputError", "match_histograms", "Model", "ModelError", "MTCNNDetector", "NoFaceError",
           "open_model", "resolve_providers", "Restorer", "Retoucher", "Stream", "StylePack", "StylertError",
           "Stylizer", "to_uint8", "UntrainedWeightsWarning"]
