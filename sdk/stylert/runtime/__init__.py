"""Models on their backends: `model.py` (the base every backend shares, backend names, `open_model`)
and one module per backend (`onnxruntime.py`, `openvino.py`, `tensorrt.py`), each imported only when used."""
from .model import BACKENDS, Model, TensorSpec, open_model, resolve_providers

__all__ = ["BACKENDS", "Model", "TensorSpec", "open_model", "resolve_providers"]
