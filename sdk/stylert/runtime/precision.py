"""Which precision a model runs in on the CPU, chosen per model and machine by measurement.

OpenVINO runs a graph in f32 or bf16. bf16 is several times faster where the CPU computes it natively (AMX:
`amx_bf16`; AVX-512: `avx512_bf16`) and slower than f32 where it does not (OpenVINO emulates it), and whether its
error is acceptable depends on the model's weights. So `precision="auto"` (the default on the automatically chosen
backend) works like this: on a CPU without those flags, f32, with nothing measured; on one with them, the network
runs once in f32 and once in bf16 on DRAWS seeded inputs of its own kind (`runtime/feeds.py`), the outputs are
compared on the 8-bit scale the calls write (`to_uint8`'s rounding) inside the region the call writes (the mask of
inpaint and edit, the whole face crop otherwise), and bf16 is used only when the worst draw stays within the bound:
at most MAX_LEVELS levels of 255 on any pixel and at least MIN_PSNR_DB dB PSNR. A graph without an image output
(an encoder) has no such scale: it stays f32. The verdict is cached per model file, OpenVINO version and CPU
(`decision_file`), so the measurement runs once per machine, not on every start.

An int8 graph from `stylert quantize` passes the same gate (`choose_int8`): on precision auto it is measured against
its f32 source graph (named in its metadata, beside it), its float layers in bf16 where the CPU has native bf16, and
runs only within the bound; otherwise its source runs in its place, with its own choice. Without its source beside
it, nothing can be measured and it runs as given.

The pieces are separate so each can be checked on any CPU: `output_error` (the measurement, on arrays), `decide`
(the bound), `choose` (flags, cache and measurement, each passed in), `cache_key` (what invalidates a verdict).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..errors import InputError

PRECISIONS = ("auto", "f32", "bf16")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # native bf16 arithmetic; without them OpenVINO emulates bf16 (slower)
MAX_LEVELS = 4  # the bound: no pixel more than 4 levels of 255 from f32's ...
MIN_PSNR_DB = 45.0  # ... and at least 45 dB over the region (f32 against itself: infinite)
DRAWS = 3  # seeded inputs per measurement
BOUND = f"the bound is max {MAX_LEVELS}/255 and >= {MIN_PSNR_DB:g} dB"
VERDICTS = ("f32", "bf16", "int8+f32", "int8+bf16", "source")  # what a cached verdict may say
SCHEMA = 1  # of the cached verdicts: a change of this module's rules makes earlier verdicts unreadable
PRECISION_ENV = "STYLERT_PRECISION"  # the default where a call names none (the CLI's --precision sets it)
CACHE_ENV = "STYLERT_CACHE"  # the cache folder (precision verdicts, OpenVINO's compiled blobs)


def check_precision(value, name: str = "precision") -> str:
    """One of PRECISIONS, or InputError naming `name` (the argument, or the variable it came from)."""
    if not isinstance(value, str) or value.strip().lower() not in PRECISIONS:
        raise InputError(f"{name}: expected {', '.join(PRECISIONS)}, got {value!r}")
    return value.strip().lower()


def pinned_precision(precision: str | None) -> str | None:
    """The precision asked for: the argument, else STYLERT_PRECISION, else None (the backend's own default)."""
    if precision is not None:
        return check_precision(precision)
    from_env = os.environ.get(PRECISION_ENV, "").strip()
    return check_precision(from_env, PRECISION_ENV) if from_env else None


def native_bf16(flags: Iterable[str]) -> bool:
    return bool(set(flags) & set(BF16_FLAGS))


def no_bf16_reason() -> str:
    return f"this CPU has no native bf16 ({' or '.join(BF16_FLAGS)} not in its flags)"


@dataclass(frozen=True)
class OutputError:
    """How far a candidate's output is from f32's, on the 8-bit scale: the largest difference in levels of 255
    and the PSNR in dB (infinite when equal)."""
    max_levels: int
    psnr_db: float

    def within(self) -> bool:
        return self.max_levels <= MAX_LEVELS and self.psnr_db >= MIN_PSNR_DB

    def worst(self, other: OutputError) -> OutputError:
        return OutputError(max(self.max_levels, other.max_levels), min(self.psnr_db, other.psnr_db))

    def text(self) -> str:
        psnr = "inf" if math.isinf(self.psnr_db) else f"{self.psnr_db:.1f}"
        return f"max {self.max_levels}/255, {psnr} dB"


def levels(images: np.ndarray) -> np.ndarray:
    """Images in about [-1, 1] -> the 8-bit levels the calls write (`faces.pipeline.to_uint8`'s rounding)."""
    return np.clip(np.rint((np.asarray(images, np.float64) + 1.0) * 127.5), 0, 255)


def output_error(reference: np.ndarray, candidate: np.ndarray, region: np.ndarray | None = None) -> OutputError:
    """The error of `candidate` against `reference` (images [N, C, H, W] in about [-1, 1]) on the 8-bit scale,
    over the pixels where `region` ([N, 1, H, W], nonzero = written; None = everywhere) is set, every channel."""
    ref, got = levels(reference), levels(candidate)
    if ref.shape != got.shape:
        raise ValueError(f"output_error: shapes {ref.shape} and {got.shape} differ")
    where = np.ones(ref.shape, bool) if region is None else np.broadcast_to(np.asarray(region) != 0, ref.shape)
    if not where.any():
        raise ValueError("output_error: the region is empty")
    diff = (ref - got)[where]
    mse = float(np.mean(diff ** 2))
    return OutputError(int(np.abs(diff).max()), math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse))


@dataclass(frozen=True)
class Choice:
    """The precision a model runs in and why; `error`: the measured error of bf16 against f32, where measured."""
    precision: str
    reason: str
    error: OutputError | None = None

    def describe(self) -> dict:
        return {"precision": self.precision, "reason": self.reason,
                "error": None if self.error is None else asdict(self.error)}


def decide(error: OutputError | None) -> Choice:
    """The gate: bf16 when its measured error is within the bound, else f32 (None: no image output to measure)."""
    if error is None:
        return Choice("f32", "no image output to measure bf16 on: f32")
    if error.within():
        return Choice("bf16", f"bf16 measured within the bound against f32 ({error.text()}; {BOUND})", error)
    return Choice("f32", f"bf16 measured outside the bound against f32 ({error.text()}; {BOUND}): f32", error)


def choose_int8(flags: Iterable[str], measure: Callable[[str], OutputError | None], verdict: Path | None) -> Choice:
    """precision="auto" for an int8 graph from `stylert quantize`: its float part in bf16 where the CPU has native
    bf16, else f32; kept ("int8+bf16", "int8+f32") where `measure(float part)`, its worst error against its f32
    source graph, is within the same bound, else "source" (its source graph runs instead). Cached like `choose`."""
    cached = read_verdict(verdict) if verdict is not None else None
    if cached is not None:
        return cached
    part = "bf16" if native_bf16(flags) else "f32"
    error = measure(part)
    said = "no image output to measure" if error is None else error.text()
    if error is not None and error.within():
        choice = Choice(f"int8+{part}", f"int8 graph ({part} float part) measured within the bound against its f32 "
                                        f"source ({said}; {BOUND})", error)
    else:
        choice = Choice("source", f"int8 graph ({part} float part) measured outside the bound against its f32 "
                                  f"source ({said}; {BOUND})", error)
    if verdict is not None:
        write_verdict(verdict, choice)
    return choice


def float_part(precision: str) -> str:
    """OpenVINO's inference precision for a choice: "int8+bf16" computes its float layers in bf16."""
    return precision.rpartition("+")[2]


def choose(flags: Iterable[str], measure: Callable[[], OutputError | None], verdict: Path | None) -> Choice:
    """precision="auto": f32 without native bf16 (nothing measured); else the cached verdict in the file `verdict`
    where there is one, else `measure()` (bf16's worst error against f32, or None) through `decide`, then cached."""
    if not native_bf16(flags):
        return Choice("f32", f"{no_bf16_reason()}: f32")
    if verdict is not None:
        cached = read_verdict(verdict)
        if cached is not None:
            return cached
    choice = decide(measure())
    if verdict is not None:
        write_verdict(verdict, choice)
    return choice


def cache_root() -> Path:
    """stylert's cache folder: STYLERT_CACHE, else $XDG_CACHE_HOME/stylert, else ~/.cache/stylert."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache") / "stylert"


def file_identity(path: str | Path) -> dict:
    """What identifies a model file's content cheaply: its resolved path, size, modification time and the SHA-256
    of its first and last MiB (a model is hundreds of MB; hashing all of it would cost every start a second)."""
    path = Path(path).resolve()
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(1 << 20))
        if stat.st_size > 1 << 20:
            f.seek(max(1 << 20, stat.st_size - (1 << 20)))
            digest.update(f.read(1 << 20))
    return {"path": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256_ends": digest.hexdigest()}


def cache_key(path: str | Path, *, openvino: str, cpu: str, candidate: str) -> str:
    """The key of a verdict: the model file (`file_identity`), the OpenVINO version, the CPU model, the candidate
    precision measured, the bound and this module's SCHEMA; any change gives another key."""
    parts = {"schema": SCHEMA, "file": file_identity(path), "openvino": openvino, "cpu": cpu, "candidate": candidate,
             "bound": [MAX_LEVELS, MIN_PSNR_DB, DRAWS]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def decision_file(key: str, root: Path | None = None) -> Path:
    return (root or cache_root()) / "precision" / f"{key}.json"


def read_verdict(path: Path) -> Choice | None:
    """A cached verdict, or None where there is none or it cannot be read (then it is measured again)."""
    try:
        data = json.loads(path.read_text())
        error = data["error"]
        if data["precision"] not in VERDICTS:
            return None
        return Choice(data["precision"], str(data["reason"]),
                      None if error is None else OutputError(int(error["max_levels"]), float(error["psnr_db"])))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_verdict(path: Path, choice: Choice) -> None:
    """Written whole or not at all (a temporary file renamed), with the user's umask; a cache that cannot be
    written is skipped: the next start measures again."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(choice.describe()))
        tmp.replace(path)
    except OSError:
        with contextlib.suppress(OSError):  # none was made (e.g. the folder could not be)
            tmp.unlink()


def image_output(outputs: list) -> int | None:
    """The index of a graph's image output (TensorSpecs: the first [N, 3, H, W]), None where it has none."""
    return next((i for i, s in enumerate(outputs) if len(s.shape) == 4 and s.shape[1] == 3), None)


def written_region(feeds: dict[str, np.ndarray]) -> np.ndarray | None:
    """The region a call writes, from a graph's inputs: the mask of inpaint and edit (1 = filled), the content
    mask of region-local stylization; None (the whole output) otherwise."""
    for name in ("mask", "content_mask"):
        if name in feeds:
            return feeds[name]
    return None
