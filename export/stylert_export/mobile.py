"""Phone targets: ONNX Runtime Mobile (`.ort`), ExecuTorch (`.pte`, XNNPACK) and ncnn (`.ncnn.param` and `.bin`),
each checked against PyTorch here.

All start from the module the ONNX export builds, whose modulated convs take the activation form (scale the
input by the style, convolve with the layer's own constant weight, scale by the demodulation): every conv weight is
a constant, which NNAPI, Core ML and XNNPACK need. Shapes are fixed at batch 1, as phone accelerators want.

ort-mobile: the ONNX graph at fixed shapes (fp16: float16 inside, float32 inputs and outputs), ONNX Runtime's
  mobile usability checker (its report saved as NAME.usability.txt, the NNAPI and Core ML MLProgram partitions in
  NAME.ort.json), then onnxruntime's own `convert_onnx_models_to_ort` at the "basic" optimisation level: NAME.ort
  and NAME.required_operators.config (the operators a minimal runtime build needs).
executorch: `torch.export` of the module, parameters folded into constants (a conv weight computed from a
  parameter, such as a transposed or flipped filter, becomes a static one), stride-2 transposed convolutions
  written as four phase convolutions in fp32 and fp16 (_transposed_conv_as_phases), elementwise operands of rank
  < 4 reshaped to rank 4 (_operands_in_rank4: activations stay channels-last), lowered with XNNPACK's partitioner:
  NAME.pte; NAME.pte.json says how many of its convolutions XNNPACK took. fp16: convolution and linear weights and
  a matrix product's constant operand in float16 (not in a submodule whose class sets float32_weights), arithmetic
  in float32 (_weights_in_float16). int8 (executorch only): XNNPACK's dynamic quantization, int8 weights per output
  channel and activations quantized as the model runs; the weights it leaves float (a matrix product's constant
  operand, a convolution its quantizer does not take) in float16 as in fp16.
ncnn: the ONNX graph at fixed shapes with the ort-mobile rewrites (every tensor of rank 4 at most, which ncnn's
  layers need) and phone_graph.rewrite_for_ncnn's (what pnnx converts wrongly, and a comparison ncnn has no layer
  for), converted by pnnx (ncnn's converter): NAME.ncnn.param and NAME.ncnn.bin, its weights in float16 for fp16
  (ncnn's own weight storage; run here in float32 arithmetic); NAME.ncnn.param.json names each input's and output's
  blob and batch axis.

Each artifact then runs on its own runtime here (onnxruntime for `.ort`, `executorch.runtime` for `.pte`, the ncnn
wheel for `.ncnn.param`) on fresh
seeded inputs against the PyTorch module in float32; fp32 must be within 1e-4 relative (L2), fp16 and int8 within 5e-2;
past that the artifact is removed and the export fails. A model whose arithmetic amplifies round-off (float64_floor,
as in the desktop parity check) is judged against its float64 copy instead, allowed twice PyTorch float32's own
relative error on top of the tolerance.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import logging
import os
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch

from .onnx_export import DEFAULT_OPSET, ExportError, _compare, _float64_outputs, _outputs, export_module
from .phone_graph import attribute

TARGETS = ("ort-mobile", "executorch", "ncnn")
PRECISIONS = {"ort-mobile": ("fp32", "fp16"), "executorch": ("fp32", "fp16", "int8"), "ncnn": ("fp32", "fp16")}
TOLERANCE = {"fp32": 1e-4, "fp16": 5e-2, "int8": 5e-2}  # relative L2 over every output, against PyTorch in float32
SUFFIX = {"ort-mobile": ".ort", "executorch": ".pte", "ncnn": ".ncnn.param"}
COMPANION = {".ort": ".required_operators.config", ".param": ".bin"}  # written beside an artifact, removed with it
RUNTIME = {"ort-mobile": "onnxruntime", "executorch": "executorch.runtime (XNNPACK)", "ncnn": "ncnn"}
MOBILE_EXTRA = "pip install 'stylert[mobile]'"
PARITY_SEED = 24680  # fresh inputs: neither the traced example (seed 0) nor the ONNX parity check's


@dataclass(frozen=True)
class Target:
    """Where an export goes: a phone runtime and the precision of its weights and arithmetic."""
    name: str
    precision: str = "fp32"

    def __post_init__(self):
        if self.name not in TARGETS:
            raise ValueError(f"unknown target {self.name!r}; expected onnx or one of {', '.join(TARGETS)}")
        if self.precision not in PRECISIONS[self.name]:
            raise ValueError(f"--precision {self.precision}: {self.name} takes {', '.join(PRECISIONS[self.name])} "
                             "(ONNX Runtime's and ncnn's int8 need calibration images, which stylert does not ship; "
                             "executorch's int8 quantizes activations as it runs)")


@dataclass
class Partitions:
    """What ONNX Runtime's usability checker estimates for one execution provider."""
    nodes: int
    supported: int
    partitions: int
    unsupported_ops: list[str]
    failed_conditions: dict[str, int] = field(default_factory=dict)  # {"op: not its condition": nodes}

    @property
    def share(self) -> float:
        return self.supported / max(self.nodes, 1)


@dataclass
class PhoneReport:
    target: str
    precision: str
    path: str
    size_bytes: int
    rel: float
    max_abs: float
    tolerance: float
    floor: float | None = None  # PyTorch float32 vs float64, relative: the model's own round-off, when measured
    convs: int | None = None  # executorch: convolutions in the graph
    delegated_convs: int | None = None  # executorch: of them, run by XNNPACK
    partitions: dict[str, Partitions] = field(default_factory=dict)  # ort-mobile: per provider
    blobs: dict[str, dict] = field(default_factory=dict)  # ncnn: input or output name -> its blob and batch axis

    @property
    def ok(self) -> bool:
        allowed = self.tolerance + (2 * self.floor if self.floor is not None else 0.0)
        return bool(np.isfinite(self.rel)) and self.rel <= allowed

    def __str__(self) -> str:
        against, allowed = "PyTorch", f"tolerance {self.tolerance:g}"
        if self.floor is not None:
            against = "PyTorch in float64"
            allowed = f"PyTorch float32 vs float64: relative {self.floor:.2e}; {allowed} + 2 x that"
        parts = [f"{self.target} {self.precision}: {Path(self.path).name}, {self.size_bytes / 2 ** 20:.2f} MiB, "
                 f"relative {self.rel:.2e} vs {against} (max abs {self.max_abs:.2e}), {allowed} "
                 f"-> {'ok' if self.ok else 'FAILED'}"]
        if self.convs is not None:
            parts.append(f"XNNPACK runs {self.delegated_convs} of {self.convs} convolutions")
        for ep, p in self.partitions.items():
            parts.append(f"{ep}: {p.supported}/{p.nodes} nodes ({100 * p.share:.1f}%) in {p.partitions} partitions"
                         + "".join(f" ({n} {what})" for what, n in p.failed_conditions.items()))
        return "; ".join(parts)

    def to_json(self) -> dict:
        out = asdict(self)
        for ep, p in self.partitions.items():
            out["partitions"][ep]["share"] = round(p.share, 4)
        return out


def artifact_path(output: str | Path, target: Target) -> Path:
    """retouch.onnx -> retouch.ort / retouch.pte / retouch.ncnn.param beside it."""
    return Path(output).with_suffix(SUFFIX[target.name])


def artifact_bytes(path: Path) -> int:
    """What an app ships of an artifact: the file, and an ncnn .param's weights (.bin)."""
    return path.stat().st_size + (path.with_suffix(".bin").stat().st_size if path.suffix == ".param" else 0)


def remove_artifact(path: Path) -> None:
    """A phone file that failed its check, and what is written beside it (COMPANION: an .ort's operator config,
    an ncnn .param's weights)."""
    path.unlink(missing_ok=True)
    if path.suffix in COMPANION:
        path.with_suffix(COMPANION[path.suffix]).unlink(missing_ok=True)


def export_phone(module: torch.nn.Module, reference: Callable, make_inputs: Callable[[int, int], dict],
                 output: str | Path, *, output_names: list[str], metadata: dict, target: Target,
                 opset: int = DEFAULT_OPSET, float64_floor: bool = False, log=print) -> PhoneReport:
    """`module` for `target` beside `output` (its suffix replaced), checked on the target's runtime against
    `reference` (the float32 PyTorch model; with float64_floor, a Module judged in float64 as
    onnx_export.check_parity does); a failed check removes the artifact and raises ExportError."""
    path = artifact_path(output, target)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = make_inputs(1, 0)
    if target.name == "ort-mobile":
        report_extra = {"partitions": _write_ort(module, example, output_names, path, opset, metadata,
                                                 target.precision, log)}
        run = _run_ort
    elif target.name == "ncnn":
        blobs = _write_ncnn(module, example, output_names, path, opset, metadata, target.precision, log)
        report_extra = {"blobs": blobs}
        run = functools.partial(_run_ncnn, axes={b["blob"]: b["batch_axis"] for b in blobs.values()})
    else:
        convs, delegated = _write_pte(module, example, path, target.precision)
        report_extra = {"convs": convs, "delegated_convs": delegated}
        run = _run_pte
    inputs = make_inputs(1, PARITY_SEED)
    try:
        got = run(path, inputs)
    except Exception as exc:  # the runtime's own error, as one line; the file is not left behind
        remove_artifact(path)
        raise ExportError(f"{path.name} does not run on {RUNTIME[target.name]} here: {_first_line(exc)}; "
                          "the file was removed") from exc
    with torch.no_grad():
        want = _outputs(reference(**inputs))
        floor = None
        if float64_floor:
            exact = _float64_outputs(reference, inputs)
            floor, want = _compare(want, exact)[1], exact
    max_abs, rel = _compare(got, want)
    if not np.isfinite(max_abs):
        rel = float("nan")
    report = PhoneReport(target.name, target.precision, str(path), artifact_bytes(path), rel, max_abs,
                         TOLERANCE[target.precision], floor, **report_extra)
    log(str(report))
    if not report.ok:
        remove_artifact(path)
        raise ExportError(f"{path}: {report}; the file was removed")
    fed = {k: v.float() for k, v in example.items()} if target.name == "ncnn" else example  # as the file takes them
    io_spec = {"inputs": [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in fed.items()],
               "outputs": [[name, list(o.shape)] for name, o in zip(output_names, want)]}
    path.with_name(path.name + ".json").write_text(json.dumps({**report.to_json(), **io_spec, "metadata": metadata},
                                                              indent=1))
    return report


# --- ONNX Runtime Mobile ---

def _write_ort(module, example, output_names, path: Path, opset: int, metadata: dict, precision: str,
               log) -> dict[str, Partitions]:
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        onnx_path = Path(tmp) / path.with_suffix(".onnx").name
        export_module(module, example, output_names, onnx_path, opset=opset, dynamic_batch=False,
                      metadata={**metadata, "stylert.precision": precision, "stylert.target": "ort-mobile"})
        _rewrite_for_phones(onnx_path, log)
        if precision == "fp16":
            _to_fp16(onnx_path)
        partitions = check_usability(onnx_path, path.with_suffix(".usability.txt"))
        to_ort(onnx_path, path)
    return partitions


def to_ort(onnx_path: Path, path: Path) -> None:
    """onnxruntime's convert_onnx_models_to_ort on one graph at the "basic" optimisation level (ONNX Runtime's
    advice for models run with NNAPI or Core ML: no CPU-only fused ops): `path` (.ort) and the reduced operator
    config beside it (PATH-without-suffix.required_operators.config)."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    quiet = io.StringIO()
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        try:
            with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet), _optimization_level("basic"):
                convert_onnx_models_to_ort(onnx_path, output_dir=Path(tmp),
                                           optimization_styles=[OptimizationStyle.Fixed])
        except Exception as exc:
            raise ExportError(f"onnxruntime's convert_onnx_models_to_ort refused {onnx_path.name}: "
                              f"{_first_line(exc)}") from exc
        converted = Path(tmp) / f"{onnx_path.stem}.basic.ort"
        if not converted.is_file():
            raise ExportError(f"convert_onnx_models_to_ort wrote no .ort for {onnx_path.name}: "
                              f"{quiet.getvalue().strip()[-300:]}")
        converted.replace(path)
        (Path(tmp) / f"{onnx_path.stem}.required_operators.basic.config").replace(
            path.with_suffix(".required_operators.config"))


@contextlib.contextmanager
def _optimization_level(level: str):
    """The graph optimisation level convert_onnx_models_to_ort applies (its environment variable), with its log
    lines (it logs each config it writes at INFO level) kept quiet."""
    key = "ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL"
    before = os.environ.get(key)
    os.environ[key] = level
    converter_log = logging.getLogger("ort_format_model.utils")
    log_level = converter_log.level
    converter_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        converter_log.setLevel(log_level)
        if before is None:
            del os.environ[key]
        else:
            os.environ[key] = before


def _rewrite_for_phones(onnx_path: Path, log) -> None:
    """phone_graph's exact rewrites into ops both NNAPI and Core ML take."""
    from .phone_graph import rewrite_for_phones

    _rewrite(onnx_path, rewrite_for_phones, "phone accelerators", log)


def _rewrite_for_ncnn(onnx_path: Path, log) -> None:
    """phone_graph's rewrites of what pnnx converts wrongly, after the phone ones."""
    from .phone_graph import rewrite_for_ncnn

    _rewrite(onnx_path, rewrite_for_ncnn, "pnnx", log)


def _rewrite(onnx_path: Path, rewrite: Callable[[onnx.ModelProto], dict], what: str, log) -> None:
    """`rewrite` on the graph in `onnx_path`, saved in place; its counts logged."""
    model = onnx.load(str(onnx_path))
    done = rewrite(model)
    onnx.save(model, str(onnx_path))
    if done:
        log(f"rewritten for {what}: " + ", ".join(f"{n} {op}" for op, n in sorted(done.items())))


def _to_fp16(onnx_path: Path) -> None:
    """float16 weights and arithmetic inside, float32 inputs and outputs (what the app feeds stays the same)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
    onnx.save(model, str(onnx_path))


def _given(node, i: int, constants: dict) -> bool:
    """Input i is a constant or omitted."""
    return i >= len(node.input) or not node.input[i] or node.input[i] in constants


def _clip_bounds(node, constants) -> tuple:
    return tuple(float(constants[node.input[i]].reshape(())) if len(node.input) > i and node.input[i] in constants
                 else None for i in (1, 2))


# What ONNX Runtime's operator tables state beside an operator and its checker leaves unchecked, where the graph
# alone decides it: {provider: {op: (condition, test(node, constants))}}.
STATED_CONDITIONS = {
    "NNAPI": {
        "Clip": ("bounds [0, 6] or [-1, 1] (relu6, relu1)", lambda n, c: _clip_bounds(n, c) in ((0.0, 6.0), (-1.0, 1.0))),
        "DepthToSpace": ("DCR mode", lambda n, c: attribute(n, "mode", "DCR") == "DCR"),
        "Conv": ("constant weight and bias", lambda n, c: all(_given(n, i, c) for i in (1, 2))),
        "Pad": ("constant mode, constant non-negative pads", lambda n, c: attribute(n, "mode", "constant")
                == "constant" and len(n.input) > 1 and n.input[1] in c and (c[n.input[1]] >= 0).all() and _given(n, 2, c)),
    },
    "CoreML MLProgram": {
        "Conv": ("constant bias", lambda n, c: _given(n, 2, c)),
        "Slice": ("constant starts, ends, axes, steps", lambda n, c: all(_given(n, i, c) for i in range(1, 5))),
    },
}


class _StatedConditionsChecker:
    """An EP's operator table (ONNX Runtime's checker), with STATED_CONDITIONS checked too: a node that fails one
    counts as unsupported, so the partitions are nearer to what the EP takes on a phone."""

    def __init__(self, table, conditions: dict, constants: dict):
        self.table, self.conditions, self.constants = table, conditions, constants
        self.failed: dict[str, int] = {}

    def is_op_supported(self, node) -> bool:
        if not self.table.is_op_supported(node):
            return False
        condition = self.conditions.get(node.op_type)
        if condition and not condition[1](node, self.constants):
            key = f"{node.op_type}: not {condition[0]}"
            self.failed[key] = self.failed.get(key, 0) + 1
            return False
        return True

    def get_caveats(self):
        return self.table.get_caveats()


def check_usability(onnx_path: Path, report_path: Path) -> dict[str, Partitions]:
    """ONNX Runtime's mobile usability checker on `onnx_path` (its log saved to `report_path`), and the partitions
    for NNAPI and Core ML MLProgram at the graph's (fixed) shapes by its partitioning, with the conditions its
    operator tables state checked as well (STATED_CONDITIONS; NNAPI: tensors of rank <= 4)."""
    from onnx import numpy_helper
    from onnxruntime.tools.mobile_helpers import usability_checker as uc
    from onnxruntime.tools.onnx_model_utils import optimize_model

    logger = logging.getLogger("stylert.mobile_usability")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        uc.analyze_model(onnx_path, skip_optimize=False, logger=logger)
    finally:
        logger.removeHandler(handler)
    report_path.write_text(stream.getvalue())
    tables = Path(uc.__file__).parent
    found = {}
    with tempfile.TemporaryDirectory() as tmp:  # the checker's own steps: basic optimisation, shape inference
        optimized = Path(tmp) / onnx_path.name
        optimize_model(onnx_path, optimized, use_external_initializers=True)
        model = uc.ModelProtoWithShapeInfo(optimized).model_with_shape_info
        constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        for ep, table, max_rank in (("NNAPI", "nnapi_supported_ops.md", 4),
                                    ("CoreML MLProgram", "coreml_supported_mlprogram_ops.md", 5)):
            checker = _StatedConditionsChecker(uc._SupportedOpsChecker(tables / table), STATED_CONDITIONS[ep],
                                               constants)
            info = uc.check_partitioning(model.graph, checker, True, max_rank)
            found[ep] = Partitions(info.num_nodes, info.num_supported_nodes, info.num_partitions,
                                   sorted(info.unsupported_ops), dict(sorted(checker.failed.items())))
    return found


def _run_ort(path: Path, inputs: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # an fp16 graph: ONNX Runtime's CPU notes on what it cannot constant-fold
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {k: v.numpy() for k, v in inputs.items()})


# --- ncnn ---

NO_BATCH_AXIS = 233  # ncnn's Python Mat: batch_index for a tensor without one


def _write_ncnn(module, example, output_names, path: Path, opset: int, metadata: dict, precision: str,
                log) -> dict[str, dict]:
    """The ort-mobile graph (fixed shapes, phone rewrites: no tensor above rank 4) through pnnx; returns each input
    and output's blob (pnnx names them in0, in1, ... and out0, ... in the graph's order) and batch axis."""
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        onnx_path = Path(tmp) / path.with_suffix("").with_suffix(".onnx").name
        export_module(module, example, output_names, onnx_path, opset=opset, dynamic_batch=False,
                      metadata={**metadata, "stylert.precision": precision, "stylert.target": "ncnn"})
        _rewrite_for_phones(onnx_path, log)
        _rewrite_for_ncnn(onnx_path, log)
        axes = to_ncnn(onnx_path, path, [list(v.shape) for v in example.values()], fp16=precision == "fp16")
    blobs = [f"in{i}" for i in range(len(example))] + [f"out{i}" for i in range(len(output_names))]
    if set(blobs) - set(axes):
        remove_artifact(path)
        raise ExportError(f"{path.name}: pnnx made blobs {sorted(axes)}, the graph has {blobs}; the file was removed")
    return {name: {"blob": blob, "batch_axis": axes[blob]} for name, blob in zip([*example, *output_names], blobs)}


def to_ncnn(onnx_path: Path, path: Path, shapes: list[list[int]], fp16: bool = False) -> dict[str, int | None]:
    """pnnx, ncnn's converter, on one ONNX graph at its inputs' `shapes`: `path` (NAME.ncnn.param) and its weights
    NAME.ncnn.bin (float16 with fp16); pnnx's other files stay in the graph's folder. Returns each input and output
    blob's batch axis as pnnx decided it (`_batch_axes`). ncnn's blobs are float: an
    integer input (a style's mixing layer) is declared float32 first, its cast to float then an identity. pnnx
    20261020 leaves ONNX's DepthToSpace as it is, which ncnn has no layer for: it becomes ncnn's PixelShuffle (mode 1
    is DCR's channel order, 0 CRD's)."""
    import ncnn
    import pnnx

    _float_inputs(onnx_path)
    work = onnx_path.parent
    shapes = ",".join(f"[{','.join(map(str, shape))}]f32" for shape in shapes)
    files = {key: work / f"{onnx_path.stem}.{key}" for key in ("pnnxparam", "pnnxbin", "pnnxpy", "pnnxonnx",
                                                                "ncnnparam", "ncnnbin", "ncnnpy")}
    done = subprocess.run([pnnx.EXEC_PATH, str(onnx_path), f"inputshape={shapes}", f"fp16={int(fp16)}",
                           *(f"{key}={file}" for key, file in files.items())],
                          capture_output=True, text=True, cwd=work)
    if done.returncode or not files["ncnnparam"].is_file():
        said = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise ExportError(f"pnnx refused {onnx_path.name} (exit status {done.returncode}): {said}")
    modes = {(attribute(n, "blocksize", 0), attribute(n, "mode", "DCR")) for n in onnx.load(
        str(onnx_path), load_external_data=False).graph.node if n.op_type == "DepthToSpace"}
    if len(modes) > 1:
        raise ExportError(f"{onnx_path.name}: DepthToSpace of several kinds {sorted(modes)}; pnnx leaves them "
                          "unconverted and they cannot be told apart in its output")
    lines = files["ncnnparam"].read_text().splitlines()
    for k, line in enumerate(lines):
        if line.startswith("DepthToSpace "):
            (blocksize, mode), = modes
            lines[k] = re.sub(r"^DepthToSpace ", "PixelShuffle ", line) + f" 0={blocksize} 1={int(mode == 'DCR')}"
    unknown = sorted({line.split()[0] for line in lines[2:] if ncnn.layer_to_index(line.split()[0]) < 0})
    if unknown:
        raise ExportError(f"pnnx left {', '.join(unknown)} in {onnx_path.name}, which ncnn has no layer for")
    axes = _batch_axes(files["ncnnpy"].read_text())
    path.write_text("\n".join(lines) + "\n")
    files["ncnnbin"].replace(path.with_suffix(".bin"))
    return axes


def _batch_axes(script: str) -> dict[str, int | None]:
    """Each blob's batch axis, None where it has none, from the test script pnnx writes beside its conversion (its
    `ncnn.Mat(x, batch_index=i)` and `mat.numpy(batch_index=i)`, 233 for none): pnnx drops an axis as the batch only
    where the graph shows it is one (an image's, not a token tensor's), and this is where it says which."""
    found = re.findall(r'ex\.input\("(in\d+)", ncnn\.Mat\(\w+\.numpy\(\), batch_index=(\d+)\)', script)
    found += re.findall(r'\b(out\d+)\.numpy\(batch_index=(\d+)\)', script)
    if not found:
        raise ExportError("pnnx's script states no blob's batch axis (a pnnx other than 20261020?)")
    return {blob: None if int(axis) == NO_BATCH_AXIS else int(axis) for blob, axis in found}


def _float_inputs(onnx_path: Path) -> None:
    """Integer graph inputs declared float32, the inferred types of what they feed dropped (re-inferred as float)."""
    model = onnx.load(str(onnx_path))
    integers = [i for i in model.graph.input if i.type.tensor_type.elem_type != onnx.TensorProto.FLOAT]
    if integers:
        for value in integers:
            value.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
        del model.graph.value_info[:]
        onnx.save(model, str(onnx_path))


def _run_ncnn(path: Path, inputs: dict, axes: dict[str, int | None]) -> list[np.ndarray]:
    """The .param and .bin on the ncnn wheel, in float32 arithmetic (fp16 weights widened as ncnn loads them), each
    input as float32 by blob (in0, in1, ... in order) and batch axis (`axes`, to_ncnn's), as ncnn's Mat takes them;
    the outputs out0, out1, ... back in full."""
    import ncnn

    net = load_ncnn(path)
    with net.create_extractor() as ex:
        for k, value in enumerate(inputs.values()):
            array = np.ascontiguousarray(value.numpy(), dtype=np.float32)
            ex.input(f"in{k}", ncnn.Mat(array, batch_index=batch_index(axes[f"in{k}"])).clone())
        got = []
        for blob in sorted((b for b in axes if b.startswith("out")), key=lambda b: int(b[3:])):
            status, mat = ex.extract(blob)
            if status:
                raise RuntimeError(f"ncnn could not compute {blob} (status {status})")
            got.append(np.array(mat.numpy(batch_index=batch_index(axes[blob]))))
    return got


def load_ncnn(path: Path):
    """An ncnn .param and its .bin on the ncnn wheel in float32 storage and arithmetic (float16 weights widened as
    ncnn loads them), as exports check them."""
    import ncnn

    net = ncnn.Net()
    opt = net.opt
    opt.use_fp16_storage = opt.use_fp16_packed = opt.use_fp16_arithmetic = opt.use_bf16_storage = False
    if net.load_param(str(path)) or net.load_model(str(path.with_suffix(".bin"))):
        raise RuntimeError(f"ncnn could not load {path.name} and its .bin")
    return net


def batch_index(axis: int | None) -> int:
    """A blob's batch axis (None: it has none) as ncnn's Python Mat takes it."""
    return NO_BATCH_AXIS if axis is None else axis


# --- ExecuTorch ---

CONV_TARGETS = ("aten.convolution", "aten.conv2d", "aten.conv_transpose2d")


def _count_convs(graph) -> int:
    return sum(1 for n in graph.nodes if n.op == "call_function" and str(n.target).split(":")[0]
               .replace("<EdgeOpOverload: ", "").startswith(CONV_TARGETS))


@contextlib.contextmanager
def _quiet_executorch():
    """ExecuTorch and torchao print on import and load (CUDA libraries torchao cannot find here, cpuinfo's probes
    from C++, deprecation warnings) what says nothing about the model: kept off the command's one-line output."""
    import warnings

    loggers = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree", "root")]
    levels = [lg.level for lg in loggers]
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for lg in loggers:
                lg.setLevel(logging.ERROR)
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _write_pte(module, example: dict, path: Path, precision: str,
               dynamic_shapes: dict | None = None) -> tuple[int, int]:
    """torch.export -> constants folded -> XNNPACK partitions -> `.pte`; (convolutions, of them on XNNPACK).
    `dynamic_shapes` (torch.export's, by input name) gives sizes a range; the file is planned for its upper bounds."""
    with _quiet_executorch():
        return _lower_to_pte(module, example, path, precision, dynamic_shapes)


def _lower_to_pte(module, example: dict, path: Path, precision: str, dynamic_shapes: dict | None) -> tuple[int, int]:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import (XnnpackDynamicallyQuantizedPartitioner,
                                                                            XnnpackPartitioner)
    from executorch.exir import to_edge_transform_and_lower
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass, get_default_skip_targets_no_quant

    module = copy.deepcopy(module).eval().requires_grad_(False)  # no gradients: folded constants are plain tensors
    args = tuple(example.values())
    partitioners, keep, float32_scopes = [XnnpackPartitioner()], set(), _float32_scopes(module)
    try:
        with torch.no_grad():
            if precision == "int8":
                module, keep = _dynamic_int8(module, args)
                partitioners.insert(0, XnnpackDynamicallyQuantizedPartitioner())
            program = torch.export.export(module, args, dynamic_shapes=dynamic_shapes, strict=False)
            table = {torch.ops.aten.select.int: _select_as_slice}
            if precision != "int8":  # int8's transposed convs are quantized as they are: XNNPACK's int8 deconvolution
                table[torch.ops.aten.conv_transpose2d.input] = _transposed_conv_as_phases
            program = program.run_decompositions(table)
            convs = _count_convs(program.graph)
            _explicit_pool_strides(program)
            _operands_in_rank4(program)
            program = constant_prop_pass(program, custom_skip_targets=keep | get_default_skip_targets_no_quant())
            with _weights_in_float16(float32_scopes) if precision != "fp32" else contextlib.nullcontext():
                edge = to_edge_transform_and_lower(program, partitioner=partitioners)
            left = _count_convs(edge.exported_program().graph)
            buffer = edge.to_executorch().buffer
    except Exception as exc:
        raise ExportError(f"ExecuTorch refused the module: {_first_line(exc)}") from exc
    path.write_bytes(buffer)
    return convs, convs - left


# XNNPACK's convolution and fully connected (aten.mm with a constant right operand: the modulation's affine
# layers and the demodulation's squared-weight sums, Wsq); args[1] and args[2] are the weight and bias of each
WEIGHTED_OPS = ("aten.convolution.default", "aten.linear.default", "aten.mm.default")


def _float32_scopes(module: torch.nn.Module) -> tuple[str, ...]:
    """The paths of submodules whose weights stay float32 in an fp16 file (a class with float32_weights = True)."""
    return tuple(name for name, m in module.named_modules(remove_duplicate=False)
                 if getattr(m, "float32_weights", False))


@contextlib.contextmanager
def _weights_in_float16(keep: tuple[str, ...]):
    """While XNNPACK's delegate serialises: the weights and biases of convolutions and fully connected layers (linear,
    and a matrix product with a constant) written in float16 (but those of the ops inside the submodules at `keep`),
    the arithmetic left in float32. XNNPACK's subgraph takes a float16 filter only beside float32 activations (the
    datatype check of xnn_define_convolution_2d), which it widens once as it packs the weights: those weights take
    half the bytes in the file, the speed is fp32's. ExecuTorch 1.4.1 itself writes a convolution's weight in float32
    in any precision (op_conv2d.py: force_fp32), so its visitors for these ops are swapped for ones that do not, and
    restored."""
    import executorch.backends.xnnpack.operators  # noqa: F401  (registers the visitors)
    from executorch.backends.xnnpack.operators.node_visitor import _node_visitor_dict as registry

    saved = {op: registry[op] for op in WEIGHTED_OPS}
    registry.update({op: _half_weights(visitor, keep) for op, visitor in saved.items()})
    try:
        yield
    finally:
        registry.update(saved)


def _half_weights(visitor: type, keep: tuple[str, ...]) -> type:
    """`visitor` with its float32 constant weight and bias (the op's args[1] and args[2]) serialised in float16,
    unless its op was traced inside a submodule at `keep` (the op's nn_module_stack) or its weight is quantized (an
    int8 op's float bias stays beside it); activations, and a constant in the activation's place, stay as they
    are."""
    from executorch.backends.xnnpack.utils.utils import get_tensor_name, is_param_node

    class HalfWeights(visitor):
        halved = ()

        def define_node(self, node, *args, **kwargs):
            paths = [path for path, _ in node.meta.get("nn_module_stack", {}).values()]
            kept = any(p == k or p.startswith(k + ".") for p in paths for k in keep)
            weight = node.args[1] if len(node.args) > 1 else None
            float_weight = isinstance(weight, torch.fx.Node) and is_param_node(self.exported_program, weight)
            self.halved = tuple(node.args[1:3]) if float_weight and not kept else ()
            return super().define_node(node, *args, **kwargs)

        def define_tensor(self, tensor, *args, **kwargs):
            program = self.exported_program
            if (tensor not in self.halved or kwargs.get("quant_params") is not None
                    or not is_param_node(program, tensor) or tensor.meta["val"].dtype != torch.float32):
                return super().define_tensor(tensor, *args, **kwargs)
            name = get_tensor_name(program, tensor)
            store = program.state_dict if name in program.state_dict else program.constants
            if name not in store:  # a get_attr constant: left as it is
                return super().define_tensor(tensor, *args, **kwargs)
            value, meta = store[name], tensor.meta["val"]
            store[name], tensor.meta["val"] = value.detach().half(), meta.to(torch.float16)
            try:
                return super().define_tensor(tensor, *args, **{**kwargs, "force_fp32": False})
            finally:
                store[name], tensor.meta["val"] = value, meta

    return HalfWeights


def _dynamic_int8(module: torch.nn.Module, args: tuple) -> tuple[torch.nn.Module, set]:
    """XNNPACK's dynamic quantization (torchao's PT2E flow with ExecuTorch's XNNPACKQuantizer): convolution and
    linear weights int8 per output channel, their inputs quantized to int8 per run from their own range, so no
    calibration images are needed. Returns the quantized module and the quantize / dequantize ops constant folding
    must keep (folded, the weights would be float32 again)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    prepared = prepare_pt2e(torch.export.export(module, args, strict=False).module(), quantizer)
    prepared(*args)
    q = torch.ops.quantized_decomposed
    keep = {q.quantize_per_channel.default, q.dequantize_per_channel.default, q.quantize_per_tensor.default,
            q.dequantize_per_tensor.default, q.quantize_per_tensor.tensor, q.dequantize_per_tensor.tensor,
            q.choose_qparams.tensor}
    return convert_pt2e(prepared), keep


def _select_as_slice(x: torch.Tensor, dim: int, index: int) -> torch.Tensor:
    """x.select(dim, index) as a one-wide slice and a reshape, which XNNPACK runs: a select it does not, and one
    between two of its partitions (a style vector taken from ws) splits them, each split copying the activations
    between layouts."""
    shape = list(x.shape)
    del shape[dim]
    return x.narrow(dim, index, 1).reshape(shape)


def _transposed_conv_as_phases(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """A stride-2 transposed convolution as four stride-1 convolutions, one per output phase (row and column
    parity), interleaved by a pixel shuffle: the same taps, which XNNPACK runs as convolutions (its deconvolution
    took twice ONNX Runtime's time on a 2-core AMD EPYC Zen 4). Others stay as they are (NotImplemented).

    Full output o = 2i + t (t a tap of the kernel, size k): phase a takes taps a, a + 2, ..., a correlation with
    them reversed over x padded by (taps - 1) before; every phase is padded after to M = ceil(L / 2) outputs,
    L = 2H + k - 2, and the interleaved 2M then cropped to the convolution's padding."""
    pair = torch.nn.modules.utils._pair
    kh, kw = weight.shape[-2:]
    if not (pair(stride) == (2, 2) and pair(dilation) == (1, 1) and pair(output_padding) == (0, 0) and groups == 1
            and x.dim() == 4 and min(kh, kw) >= 2):  # a one-tap side would leave a phase without taps
        return NotImplemented
    (h, w), (ph, pw) = x.shape[-2:], pair(padding)
    lh, lw = 2 * h + kh - 2, 2 * w + kw - 2
    mh, mw = -(-lh // 2), -(-lw // 2)
    flipped = weight.transpose(0, 1).flip([2, 3])  # [out, in, kh, kw], taps reversed: phase a's are every other
    phases = []
    for a in (0, 1):
        for b in (0, 1):
            taps = flipped[:, :, (kh - 1 - a) % 2::2, (kw - 1 - b) % 2::2]
            pad = [taps.shape[3] - 1, mw - w, taps.shape[2] - 1, mh - h]
            phases.append(torch.nn.functional.conv2d(torch.nn.functional.pad(x, pad), taps))
    y = torch.nn.functional.pixel_shuffle(torch.stack(phases, dim=2).flatten(1, 2), 2)
    y = y[:, :, ph:lh - ph, pw:lw - pw]
    return y if bias is None else y + bias[:, None, None]


def _explicit_pool_strides(program) -> None:
    """max_pool2d with its stride omitted (PyTorch's default: the kernel size) gets it written out: XNNPACK's
    partitioner in ExecuTorch 1.4.1 indexes the stride and fails on an empty one."""
    pools = (torch.ops.aten.max_pool2d.default, torch.ops.aten.max_pool2d_with_indices.default)
    for node in program.graph.nodes:
        if node.op == "call_function" and node.target in pools:
            args = list(node.args)
            if len(args) < 3 or not args[2]:
                node.args = (*args[:2], list(args[1]), *args[3:])
    program.graph_module.recompile()


ELEMENTWISE = {torch.ops.aten.add.Tensor, torch.ops.aten.sub.Tensor, torch.ops.aten.mul.Tensor,
               torch.ops.aten.div.Tensor}


def _operands_in_rank4(program) -> None:
    """Each operand of rank < 4 (a Python number included) of an elementwise op with a 4-D result reshaped to
    rank 4 (a view, or a [1, 1, 1, 1] constant; constants fold afterwards), and 1 - x (rsub) written as a
    subtraction of such a constant. XNNPACK's delegate runs 4-D activations channels-last and gives an elementwise
    op one layout for all its operands: ExecuTorch 1.4.1 turns an operand it cannot make channels-last (any of
    rank < 4: the noise image [H, W], a gain, the 1 of 1 - x) into the channels-first layout together with the
    activation, each time copying the activation twice (there and back)."""
    graph = program.graph
    for node in list(graph.nodes):
        out = node.meta.get("val")
        if node.op != "call_function" or not (isinstance(out, torch.Tensor) and out.dim() == 4):
            continue
        if (node.target == torch.ops.aten.rsub.Scalar and len(node.args) == 2 and not node.kwargs
                and isinstance(node.args[1], (int, float))):
            node.target, node.args = torch.ops.aten.sub.Tensor, node.args[::-1]
        if node.target not in ELEMENTWISE:
            continue
        args = list(node.args)
        with graph.inserting_before(node):
            for i, arg in enumerate(args[:2]):
                val = arg.meta.get("val") if isinstance(arg, torch.fx.Node) else None
                if (isinstance(val, torch.Tensor) and val.dim() < 4 and all(isinstance(d, int) for d in val.shape)
                        and (val.dim() > 0 or val.dtype == out.dtype)):  # a 0-d one of another dtype: no promotion
                    shape = [1] * (4 - val.dim()) + list(val.shape)
                    args[i] = graph.call_function(torch.ops.aten.view.default, (arg, shape))
                    args[i].meta["val"] = val.view(shape)
                elif isinstance(arg, (int, float)):
                    args[i] = graph.call_function(torch.ops.aten.full.default, ([1, 1, 1, 1], arg),
                                                  {"dtype": out.dtype})
                    args[i].meta["val"] = out.new_full([1, 1, 1, 1], arg)
        node.args = tuple(args)
    program.graph_module.recompile()


def _run_pte(path: Path, inputs: dict) -> list[np.ndarray]:
    with _quiet_executorch():
        from executorch.runtime import Runtime

        method = Runtime.get().load_program(str(path)).load_method("forward")
        outputs = method.execute(list(inputs.values()))
    return [o.numpy() for o in outputs]


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:400] if text else ''}"
