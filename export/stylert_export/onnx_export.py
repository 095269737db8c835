"""PyTorch -> ONNX with dynamic batch, stylert metadata, and a parity check on ONNX Runtime.

Every exported graph is checked against the PyTorch module it came from on fresh random
inputs (a batch size other than the one traced), and the export fails past tolerance.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
from torch.overrides import TorchFunctionMode

import stylert

from .ops.winograd import CONDITIONS, WinogradForm

DEFAULT_OPSET = 18  # the lowest opset torch's ONNX exporter writes; ONNX Runtime and TensorRT 10 read it
FORMAT_VERSION = "1"  # bump when the metadata or I/O contract changes; the runtime checks it
TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2}  # max abs error on the output image


class ExportError(RuntimeError):
    """Export failed or its parity check did not pass."""


@dataclass
class ParityReport:
    max_abs: float
    rel: float
    tolerance: float
    batch: int
    floor: float | None = None  # PyTorch fp32 vs fp64 max abs, when measured: the model's own round-off

    @property
    def ok(self) -> bool:
        allowed = self.tolerance + (2 * self.floor if self.floor is not None else 0.0)
        return bool(np.isfinite(self.max_abs)) and self.max_abs <= allowed

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        if self.floor is None:
            return (f"parity (ONNX Runtime vs PyTorch, batch {self.batch}): max abs {self.max_abs:.3e}, "
                    f"relative {self.rel:.3e}, tolerance {self.tolerance:g} -> {verdict}")
        return (f"parity (ONNX Runtime vs PyTorch in float64, batch {self.batch}): max abs {self.max_abs:.3e}, "
                f"relative {self.rel:.3e}; PyTorch float32 vs float64: max abs {self.floor:.3e}; "
                f"tolerance {self.tolerance:g} + 2 x that -> {verdict}")


def export_module(module: torch.nn.Module, example: dict[str, torch.Tensor], output_names: list[str],
                  path: str | Path, *, opset: int = DEFAULT_OPSET, metadata: dict[str, str],
                  dynamic_batch: bool = True, form: TorchFunctionMode | None = None) -> Path:
    """Export `module(**example)` with every input's dim 0 as one dynamic `batch` (or every shape fixed at the
    example's, as phone accelerators want); write metadata. `form`: a mode the module is traced under, which
    writes some of its ops in another form (ops.winograd.WinogradForm)."""
    if opset < DEFAULT_OPSET:
        raise ExportError(f"opset {opset} is not supported: torch's exporter writes opset >= {DEFAULT_OPSET}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=4096)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quiet.setLevel(logging.ERROR)
        try:
            if set(example) & set(output_names):
                raise ExportError(f"ONNX names must be unique: {sorted(set(example) & set(output_names))} "
                                  "used as both input and output")
            with form or contextlib.nullcontext():
                program = torch.onnx.export(module.eval(), tuple(example.values()), input_names=list(example),
                                            output_names=output_names, opset_version=opset, dynamo=True,
                                            dynamic_shapes={name: {0: batch} for name in example} if dynamic_batch
                                            else None, optimize=False, verbose=False)
            fold_constants(program.model)
            program.save(str(path), external_data=False)
        except ExportError:
            raise
        except Exception as exc:  # the exporter's own errors are long; keep the first line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {first[:400]}") from exc
        finally:
            quiet.setLevel(level)
    model = onnx.load(str(path))  # with any external data the exporter wrote beside it
    orphan = path.with_name(path.name + ".data")  # large models: the exporter's side file, saved inline below
    written = {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")}
    if written != {opset}:
        raise ExportError(f"asked for opset {opset}, the exporter wrote {sorted(written)}")
    strip_exporter_metadata(model)
    meta = {"stylert.version": stylert.__version__, "stylert.format": FORMAT_VERSION, **metadata}
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        path.unlink(missing_ok=True)
        raise ExportError(f"{path}: exported graph fails the ONNX checker: {str(exc).splitlines()[0]}") from None
    _atomic_save(model, path)
    orphan.unlink(missing_ok=True)
    return path


# The exporter's pattern rewrites that only simplify shapes, casts and `x * 1`. Its default set also removes
# `x + 0` and `x - 0`, matching constants within 1e-8 of zero, so it drops `x + 1e-8` (the epsilon of PixelNorm and
# demodulation) and changes the result wherever x is small (FACEMUG's code-to-code blocks: 1e-2 relative). Within
# 1e-8 of one, a float32 is one, so `x * 1` and `x / 1` stay.
SHAPE_RULES = ("squeeze_reshape_1d_rule", "reshape_reshape_rule", "unsqueeze_unsqueeze_rule", "flatten_to_reshape_rule",
               "materialize_reshape_shape_rule", "collapse_slice_rule", "collapse_slice2_rule", "slice_split_rule",
               "cast_cast_rule", "no_op_cast_rule", "no_op_expand_rule", "no_op_transpose_rule",
               "transpose_transpose_rule", "cast_constant_of_shape_rule", "cast_constant_of_shape_without_value_rule",
               "dropout_zero_rule", "dropout_inference_rule", "mul_by_1_rule", "div_by_1_rule")


def fold_constants(model) -> None:
    """The exporter's optimizer with SHAPE_RULES for its rewrites, in place: fold what is constant, simplify
    shape arithmetic (so shapes infer at a fixed batch), lift constants to initializers, drop duplicates."""
    import onnx_ir.passes.common as passes
    import onnxscript.optimizer
    import onnxscript.rewriter
    from onnxscript.rewriter.rules import common as rules

    shape_rules = [variant for name in SHAPE_RULES for variant in getattr(rules, name).commute()]  # 1 * x too
    for _ in range(2):
        onnxscript.optimizer.fold_constants(model, onnx_shape_inference=True)
        onnxscript.rewriter.rewrite(model, shape_rules)
    for step in (passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
                 passes.DeduplicateInitializersPass(), passes.RemoveUnusedNodesPass()):
        step(model)


def strip_exporter_metadata(model: onnx.ModelProto) -> None:
    """Drop what PyTorch's exporter writes per node and value (stack traces with this machine's source
    paths, class hierarchies, FX nodes): private, and not needed to run the graph. stylert's own
    model-level metadata is set afterwards."""
    graphs = [model.graph] + [f for f in model.functions]
    for g in graphs:
        if hasattr(g, "metadata_props"):
            del g.metadata_props[:]
        for item in [*g.node, *getattr(g, "input", []), *getattr(g, "output", []), *getattr(g, "value_info", []),
                     *getattr(g, "initializer", [])]:
            if hasattr(item, "metadata_props"):
                del item.metadata_props[:]
            if hasattr(item, "doc_string"):
                item.doc_string = ""
    model.graph.doc_string = ""


def _atomic_save(model: onnx.ModelProto, path: Path) -> None:
    """Save under a temporary name and rename; onnx.save creates the file, so the umask sets its mode."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        onnx.save(model, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata properties of an exported graph (weights not loaded)."""
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def set_metadata(path: str | Path, updates: dict[str, str]) -> None:
    model = onnx.load(str(path))
    existing = {p.key: p for p in model.metadata_props}
    for key, value in updates.items():
        entry = existing.get(key) or model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    _atomic_save(model, Path(path))


def _outputs(result) -> list[np.ndarray]:
    return [r.double().numpy() for r in (result if isinstance(result, (tuple, list)) else [result])]


def _float64_outputs(module: torch.nn.Module, inputs: dict) -> list[np.ndarray]:
    """`module` run on a float64 copy of itself and of the inputs: the reference without float32 round-off."""
    return _outputs(copy.deepcopy(module).double()(**{k: v.double() if v.is_floating_point() else v
                                                     for k, v in inputs.items()}))


def _compare(got: list[np.ndarray], want: list[np.ndarray]) -> tuple[float, float]:
    """(max abs, relative L2) over every output; NaN anywhere in `got` gives NaN."""
    if len(got) != len(want):
        raise ExportError(f"ONNX graph has {len(got)} outputs, PyTorch {len(want)}")
    max_abs, num, den = 0.0, 0.0, 0.0
    for g, w in zip(got, want):
        if g.shape != w.shape:
            raise ExportError(f"ONNX output shape {g.shape} != PyTorch {w.shape}")
        diff = np.abs(g.astype(np.float64) - w)
        max_abs = max(max_abs, float(diff.max()) if np.isfinite(g).all() else float("nan"))
        num, den = num + float(np.square(diff).sum()), den + float(np.square(w).sum())
    return max_abs, float(np.sqrt(num / max(den, 1e-24)))


def check_parity(path: str | Path, reference: Callable[..., torch.Tensor | tuple], make_inputs: Callable[[int, int], dict],
                 tolerance: float, batch: int = 3, seed: int = 12345, flavor: str = "portable",
                 float64_floor: bool = False) -> ParityReport:
    """ONNX Runtime (CPU) vs `reference(**inputs)` on fresh random inputs of `batch` samples; every output
    compared. Plugin-flavour graphs run with the plugin nodes' CPU implementations (plugin_ops.py).

    float64_floor (for models whose arithmetic amplifies round-off, like the VSP restorer's iterated
    diffuser at random weights): compare against a float64 copy of `reference` (a Module) and allow
    twice PyTorch's own float32 error against it on top of the tolerance."""
    import onnxruntime as ort

    from .plugin_ops import runnable_on_onnxruntime

    inputs = make_inputs(batch, seed)
    session = (runnable_on_onnxruntime(path) if flavor == "plugin"
               else ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))
    got = session.run(None, {k: v.numpy() for k, v in inputs.items()})
    with torch.no_grad():
        want = _outputs(reference(**inputs))
        if not float64_floor:
            return ParityReport(*_compare(got, want), tolerance, batch)
        exact = _float64_outputs(reference, inputs)
    floor, _ = _compare(want, exact)
    return ParityReport(*_compare(got, exact), tolerance, batch, floor)


def export_checked(module: torch.nn.Module, reference: Callable, make_inputs: Callable[[int, int], dict],
                   output: str | Path, *, output_names: list[str], metadata: dict, precision: str,
                   opset: int = DEFAULT_OPSET, flavor: str = "portable", float64_floor: bool = False,
                   portable_if_none: bool = False, target=None, log=print):
    """Export `module`, built in `flavor` (portable ONNX, plugin nodes for TensorRT: plugin_ops.in_flavor, or the
    portable graph with its wide 3x3 convolutions in Winograd's form for CPUs: ops.winograd), check it
    against `reference` (always the portable PyTorch model) on ONNX Runtime, and stamp the errors
    into the metadata; a failed check removes the file and raises ExportError. Under the winograd flavour a model
    none of whose convolutions takes the form is refused, or with portable_if_none (one graph of several) written
    as the portable graph it is, its metadata saying so.

    target (a mobile.Target): write a phone artifact beside `output` instead (mobile.export_phone), checked on
    that phone runtime here; its precision replaces `precision`."""
    output = Path(output)
    if target is not None:
        from .mobile import export_phone

        if flavor != "portable":
            raise ExportError(f"--flavor {flavor} is not for phones; phone targets take the portable flavour")
        return export_phone(module, reference, make_inputs, output, output_names=output_names,
                            metadata={**metadata, "stylert.precision": target.precision}, target=target, opset=opset,
                            float64_floor=float64_floor, log=log)
    form = WinogradForm() if flavor == "winograd" else None
    export_module(module, make_inputs(2, 0), output_names, output, opset=opset,
                  metadata={**metadata, "stylert.precision": precision, "stylert.flavor": flavor}, form=form)
    if form is not None and not form.written and portable_if_none:
        log(f"{output.name}: no convolution takes the Winograd form; written as the portable graph")
        flavor = "portable"
        set_metadata(output, {"stylert.flavor": flavor})
    elif form is not None and not form.written:
        output.unlink(missing_ok=True)
        raise ExportError(f"--flavor winograd: no convolution of this {precision} model takes the Winograd form "
                          f"({CONDITIONS}); export it with --flavor portable")
    report = check_parity(output, reference, make_inputs, TOLERANCE[precision], flavor=flavor,
                          float64_floor=float64_floor)
    log(str(report))
    if not report.ok:
        output.unlink(missing_ok=True)
        raise ExportError(f"{output}: {report}; the file was removed")
    stamp = {"stylert.parity_max_abs": f"{report.max_abs:.3e}", "stylert.parity_rel": f"{report.rel:.3e}"}
    if report.floor is not None:
        stamp["stylert.parity_float32_floor"] = f"{report.floor:.3e}"
    set_metadata(output, stamp)
    return report


def config_metadata(cfg) -> str:
    return json.dumps(cfg.to_json(), sort_keys=True)
