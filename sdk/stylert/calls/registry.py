"""The calls by name (CALLS: class, value, controls), which model a path holds, opening it, and the call's
controls parsed from text (HTTP query parameters of `stylert serve`, options of `stylert batch`), with the checks and
one-line messages of the Python API and the CLI."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ..errors import InputError, ModelError
from ..faces.imageio import decode_image, read_image, read_labels, read_mask
from ..faces.pipeline import FaceModel
from ..runtime.engine import model_metadata
from ..runtime.model import open_model
from .edit import Editor
from .inpaint import REGIONS, Inpainter
from .restore import Restorer
from .retouch import Retoucher
from .stylize import StylePack, Stylizer


@dataclass(frozen=True)
class Control:
    """A control a call takes as text (a query parameter of `stylert serve`, an option of the CLI and `stylert
    batch`): its name in the Python API, its type, what it does (CLI help) and its value when not given."""
    name: str
    kind: type
    help: str
    default: object = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class FileInput:
    """A file a call reads besides the photo (an exemplar, a sketch): its name (the API keyword, the form field of
    `stylert serve`, the CLI option), what it holds (a photo, a mask, a label map) and what it does."""
    name: str
    kind: str  # "image": RGB uint8; "mask": bool, nonzero = set; "labels": uint8 class values
    help: str
    metavar: str

    def read(self, source: str | Path | bytes):
        """The file (a path, or its bytes as a request carries them) as the call takes it; errors name it."""
        data = isinstance(source, (bytes, bytearray))
        if self.kind == "image":
            return (decode_image(source, self.name) if data else read_image(source)).rgb
        if self.kind == "mask":
            return read_mask(source, self.name if data else None).fill
        return read_labels(source, self.name if data else None)


@dataclass(frozen=True)
class Call:
    """One call: its class, its value argument (strength, fidelity, style; for a masked call the region that
    can stand for a mask) and its other controls. Everything that lists the calls (the CLI, the service, the batch
    job, the bench) reads this."""
    name: str
    cls: type[FaceModel]
    help: str
    value: Control
    controls: tuple[Control, ...] = ()
    files: tuple[FileInput, ...] = ()  # files read besides the photo, given to the call as keyword options
    masked: bool = False  # the value is each photo's mask (an array, a mask file, or the region)
    model_flag: str = "--model"  # the CLI option naming the model (a style pack: --pack)
    exclusive: tuple[str, ...] = ()  # controls that exclude each other
    video: bool = True  # also video files and cameras on the CLI

    @property
    def default(self):
        return self.value.default


SEED = "z and noise draws: the same seed gives the same result"
CALLS = {c.name: c for c in (
    Call("retouch", Retoucher, "retouch the faces in photos (StyleRetoucher)",
         Control("strength", float, "1 = as trained, 0 = least change, > 1 stronger", 1.0)),
    Call("restore", Restorer, "restore degraded faces in photos (QC-StyleGAN)",
         Control("fidelity", float, "0 = fully restored (default), 1 = the input unchanged", 0.0),
         (Control("seed", int, "noise seed of VSP models (same seed, same image; default 0)", 0),)),
    Call("stylize", Stylizer, "stylize the faces in photos with a style pack",
         Control("style", str, "the style's name in the pack"),
         (Control("psi", float, "truncation (default: the style's, from the pack)"),
          Control("mix_layer", int, "mix from this layer on (3, 6, 9, 12; default 6 with --seed/--reference)"),
          Control("seed", int, "multimodal: mix with the Z+ sample of this seed"),
          Control("reference", str, "reference-guided: mix with this reference code of the style")),
         model_flag="--pack", exclusive=("seed", "reference")),
    Call("inpaint", Inpainter, "inpaint photos inside a mask (EXE-GAN: faces; GRIG: any image)",
         Control("region", str, "a face region from the detected landmarks: " + ", ".join(REGIONS)),
         (Control("seed", int, SEED, 0), Control("psi", float, "EXE-GAN: truncation of z, 0..1 (default 1: none)"),
          Control("steps", int, "GRIG: reasoning steps (default 3)")),
         (FileInput("exemplar", "image", "EXE-GAN: a photo of a face whose features guide the fill", "E.jpg"),),
         masked=True, video=False),
    Call("edit", Editor, "edit the masked part of faces from sketches, semantic maps, colours, an exemplar or an "
         "attribute (FACEMUG)",
         Control("region", str, "a face region from the detected landmarks: " + ", ".join(REGIONS)),
         (Control("seed", int, SEED, 0), Control("strength", float, "the attribute's strength")),
         (FileInput("sketch", "mask", "strokes (white on black) the photo's size", "S.png"),
          FileInput("semantic", "labels", "a face-parsing label map (values 0..18, CelebAMask-HQ)", "L.png"),
          FileInput("color", "image", "colour strokes (black = none) the photo's size", "C.png"),
          FileInput("exemplar", "image", "a face whose features guide the edit", "E.jpg")),
         masked=True, video=False),
)}
FACE_CHOICE = ("only_center_face", "largest_face", "aligned")  # which faces, as text; they exclude each other
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def call_of(path: str | Path) -> str:
    """The call a model path serves, read from its metadata without loading it: a style-pack folder
    is stylize; an .onnx graph or an .engine (its .json sidecar) says it in `stylert.call`."""
    path = Path(path)
    if path.is_dir():
        StylePack(path)  # checks the manifest
        return "stylize"
    if not path.is_file():
        raise ModelError(f"{path}: no such model file or style-pack folder")
    call = model_metadata(path).get("stylert.call", "?")
    if call not in CALLS:
        raise ModelError(f"{path}: a '{call}' model; this runs {', '.join(CALLS)} models")
    return call


def open_call(path: str | Path, providers=None, threads: int | None = None, precision: str | None = None,
              **kwargs) -> FaceModel:
    """The call's SDK object (Retoucher, Restorer, Stylizer, Inpainter or Editor) for a model path or a pack folder;
    kwargs go to its class (Editor: directions)."""
    if Path(path).is_dir():
        return Stylizer(path, providers, threads=threads, precision=precision, **kwargs)
    model = open_model(path, providers, threads=threads, precision=precision)
    if model.call not in CALLS or CALLS[model.call].cls is Stylizer:
        raise ModelError(f"{path}: a '{model.call}' model; this runs {', '.join(CALLS)} models"
                         + (" (stylize: give the style pack's folder)" if model.call == "stylize" else ""))
    return CALLS[model.call].cls(model, providers, threads=threads, precision=precision, **kwargs)


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
    kinds = {c.name: c.kind for c in spec.controls}
    takes = [spec.value.name, *kinds, *FACE_CHOICE]
    unknown = sorted(set(params) - set(takes))
    if unknown:
        raise InputError(f"unknown parameter(s) {', '.join(unknown)}; {call} takes {', '.join(takes)}")
    value = params.get(spec.value.name)
    if value is None and spec.default is None and not spec.masked:
        raise InputError(f"{call} needs {spec.value.name}")
    if value is not None:
        value = _typed(spec.value.name, value, spec.value.kind)
    options = {k: _typed(k, v, kinds[k]) for k, v in params.items() if k in kinds}
    flags = []
    for name in FACE_CHOICE:
        text = params.get(name, "0").lower()
        if text not in TRUE + FALSE:
            raise InputError(f"{name} must be 1 or 0 (true or false), got {params[name]!r}")
        if text in TRUE:
            flags.append(name)
    if len(flags) > 1:
        raise InputError(f"{' and '.join(flags)} exclude each other; give one")
    options.update({name: True for name in flags})
    return (spec.default if value is None else value), options
