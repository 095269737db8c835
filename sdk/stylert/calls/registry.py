"""The face calls by name: which model a path holds, opening it, and the call's controls parsed from
text (HTTP query parameters of `stylert serve`, options of `stylert batch`), with the checks and
one-line messages of the Python API and the CLI."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ..errors import InputError, ModelError
from ..faces.pipeline import FaceModel
from ..runtime.model import open_model


@dataclass(frozen=True)
class Call:
    name: str
    value: str  # the control that is the call's value argument
    default: float | None  # its value when not given (None: it must be given)
    options: tuple[tuple[str, type], ...] = ()  # the call's keyword controls and their types
    value_elsewhere: bool = False  # the value may come from outside the text controls (inpaint: a mask file)


CALLS = {c.name: c for c in (
    Call("retouch", "strength", 1.0),
    Call("restore", "fidelity", 0.0, (("seed", int),)),
    Call("stylize", "style", None, (("psi", float), ("mix_layer", int), ("seed", int), ("reference", str))),
    Call("inpaint", "region", None, (("seed", int), ("psi", float), ("steps", int)), value_elsewhere=True),
    Call("edit", "region", None, (("seed", int), ("strength", float)), value_elsewhere=True),
)}
FACE_OPTIONS = ("only_center_face", "largest_face", "aligned")  # which faces; they exclude each other
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def call_of(path: str | Path) -> str:
    """The call a model path serves, read from its metadata without loading it: a style-pack folder
    is stylize; an .onnx graph or an .engine (its .json sidecar) says it in `stylert.call`."""
    path = Path(path)
    if path.is_dir():
        from ..calls.stylize import StylePack

        StylePack(path)  # checks the manifest
        return "stylize"
    if not path.is_file():
        raise ModelError(f"{path}: no such model file or style-pack folder")
    if path.suffix == ".engine":
        from ..runtime.engine import sidecar_path

        try:
            meta = json.loads(sidecar_path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: no readable engine metadata beside it ({exc})") from None
    else:
        from ..runtime.engine import read_graph

        meta = read_graph(path)[0]
    call = meta.get("stylert.call", "?")
    if call not in CALLS:
        raise ModelError(f"{path}: a '{call}' model; this runs {', '.join(CALLS)} models")
    return call


def open_call(path: str | Path, providers=None, threads: int | None = None) -> FaceModel:
    """The call's SDK object (Retoucher, Restorer, Stylizer, Inpainter or Editor) for a model path or a pack folder."""
    from ..calls.edit import Editor
    from ..calls.inpaint import Inpainter
    from ..calls.restore import Restorer
    from ..calls.retouch import Retoucher
    from ..calls.stylize import Stylizer

    if Path(path).is_dir():
        return Stylizer(path, providers, threads=threads)
    model = open_model(path, providers, threads=threads)
    classes = {"retouch": Retoucher, "restore": Restorer, "inpaint": Inpainter, "edit": Editor}
    if model.call not in classes:
        raise ModelError(f"{path}: a '{model.call}' model; this runs {', '.join(CALLS)} models")
    return classes[model.call](model)


def _typed(name: str, text: str, kind: type):
    if kind is str:
        return text
    try:
        return kind(text)
    except ValueError:
        raise InputError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None


def parse_controls(call: str, params: Mapping[str, str]) -> tuple[object, dict]:
    """(value, options) for `FaceModel.process*` from text controls, e.g. {"strength": "0.7"}; unknown
    names and malformed values are refused by name. Ranges are the call's own checks (FaceModel.check)."""
    spec = CALLS[call]
    kinds = dict(spec.options)
    takes = [spec.value, *kinds, *FACE_OPTIONS]
    unknown = sorted(set(params) - set(takes))
    if unknown:
        raise InputError(f"unknown parameter(s) {', '.join(unknown)}; {call} takes {', '.join(takes)}")
    value = params.get(spec.value)
    if value is None and spec.default is None and not spec.value_elsewhere:
        raise InputError(f"{call} needs {spec.value}")
    if value is not None and spec.value not in ("style", "region"):
        value = _typed(spec.value, value, float)
    options = {k: _typed(k, v, kinds[k]) for k, v in params.items() if k in kinds}
    flags = []
    for name in FACE_OPTIONS:
        text = params.get(name, "0").lower()
        if text not in TRUE + FALSE:
            raise InputError(f"{name} must be 1 or 0 (true or false), got {params[name]!r}")
        if text in TRUE:
            flags.append(name)
    if len(flags) > 1:
        raise InputError(f"{' and '.join(flags)} exclude each other; give one")
    options.update({name: True for name in flags})
    return (spec.default if value is None else value), options
