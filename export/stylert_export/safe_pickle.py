"""Read NVlabs StyleGAN2-ADA `.pkl` snapshots without executing the code they embed.

Those pickles store each network as `torch_utils.persistence._reconstruct_persistent_obj(meta)`
where `meta` carries the module's *source code*, which the official loader `exec`s. Here every
global the pickle names is resolved by an allow-list: tensor and storage rebuilders (storages
go through `torch.load(weights_only=True)`), plain containers and numpy arrays. The persistent
objects become `PersistentRecord`s (class name, constructor kwargs, state) whose source is
never run, and every other class becomes an inert `OpaqueObject` that only records what it
was given. Nothing from the file is imported or called.
"""
from __future__ import annotations

import collections
import io
import pickle
from typing import Any

import numpy as np
import torch

try:
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _multiarray


class OpaqueObject:
    """Stand-in for any class the pickle names that is not allow-listed; runs nothing."""
    qualname = "?"

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<opaque {self.qualname}>"


class PersistentRecord:
    """A `torch_utils.persistence` object: what it was built with and its state, source never run."""

    def __init__(self, meta: dict):
        self.class_name = meta.get("class_name", "?")
        self.state = dict(meta.get("state") or {})
        self.init_kwargs = dict(self.state.get("_init_kwargs") or {})

    def __repr__(self):
        return f"<persistent {self.class_name}>"


class EasyDict(dict):
    """dnnlib.EasyDict is a dict with attribute access; a plain dict subclass suffices."""


def _opaque_class(qualname: str) -> type:
    return type(qualname.rsplit(".", 1)[-1], (OpaqueObject,), {"qualname": qualname})


def _load_storage(data: bytes):
    return torch.load(io.BytesIO(data), weights_only=True)


def _rebuild_parameter(data, requires_grad, backward_hooks, *state):
    return data


def _reconstructor(cls, base, state):
    if isinstance(cls, type) and issubclass(cls, (OpaqueObject, dict)):
        return cls()
    raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r}")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentRecord,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("builtins", "object"): object,
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return _opaque_class(f"{module}.{name}")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not used by NVlabs snapshots; refusing")


def safe_load_pickle(data: bytes) -> Any:
    """Unpickle `data` with the allow-list above; raises pickle.UnpicklingError and friends on bad data."""
    return _SafeUnpickler(io.BytesIO(data)).load()


def module_state_dict(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flatten a pickled torch.nn.Module (persistent record or opaque) into a state dict."""
    state = obj.state if isinstance(obj, (PersistentRecord, OpaqueObject)) else None
    if not isinstance(state, dict):
        return {}
    out: dict[str, torch.Tensor] = {}
    for group in ("_parameters", "_buffers"):
        for name, tensor in (state.get(group) or {}).items():
            if isinstance(tensor, torch.Tensor):
                out[prefix + name] = tensor
    for name, child in (state.get("_modules") or {}).items():
        out.update(module_state_dict(child, f"{prefix}{name}."))
    return out
