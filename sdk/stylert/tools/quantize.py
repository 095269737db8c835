"""`stylert quantize`: an int8 graph with explicit Q/DQ nodes, for TensorRT and ONNX Runtime alike.

ONNX Runtime's static quantization in QDQ format: weights int8 per output channel, symmetric;
activations int8 symmetric (TensorRT takes zero-point-free scales only), calibrated on aligned
face crops. The command aligns them itself: every face MTCNN finds in the photos of DIR is cut
out at the model's resolution, exactly as `stylert retouch` would. Only convolutions are
quantized; the mapping and affine layers (styles) and demodulation stay in float, since every
weight of a modulated conv is scaled by them, and the toRGB convs (three output channels) stay
float too, as do any layers named with --keep-float. The error of the int8 graph against the
float one on the calibration crops is measured on ONNX Runtime CPU, printed and stored in the
graph's metadata. Where OpenVINO is installed, the graph is then put through the precision gate
of this CPU (`runtime/precision.choose_int8`: against its f32 source beside it, on the 8-bit
scale), whose verdict is printed and cached for the graph's first start.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import BackendUnavailable, InputError, ModelError
from ..faces.imageio import IMAGE_SUFFIXES, ImageFileError, read_image
from ..faces.pipeline import FacePipeline, NoFaceError
from ..runtime.model import open_model

CONTROL_DEFAULTS = {"strength": 1.0, "fidelity": 0.0, "psi": 0.7}


def calibration_crops(folder: str | Path, resolution: int, limit: int, log: Callable = print,
                      detector=None) -> np.ndarray:
    """Aligned face crops [N, 3, R, R] in [-1, 1] from the photos of `folder` (files that fail are
    reported and skipped); refuses a folder with no usable face."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such calibration folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    pipeline = FacePipeline(resolution, detector)
    crops: list[np.ndarray] = []
    for path in files:
        if len(crops) >= limit:
            break
        try:
            crops += list(pipeline.prepare(read_image(path).rgb).crops)
        except (ImageFileError, NoFaceError, InputError) as exc:
            log(f"calibration: skipped {path}: {exc}")
    if not crops:
        raise InputError(f"{folder}: no usable face in {len(files)} image file(s) for calibration: put photos with "
                         "visible faces there")
    return np.stack(crops[:limit]).astype(np.float32)


def feeds_for_crops(inputs, crops: np.ndarray) -> dict[str, np.ndarray]:
    """The graph's feeds for a batch of crops: `image` and the call's neutral controls."""
    names = {s.name for s in inputs}
    if "image" not in names:
        raise InputError(f"int8 calibration runs on face crops: the graph needs an `image` input, it has {sorted(names)}")
    feeds = {"image": crops}
    for spec in inputs:
        if spec.name != "image":
            if spec.name not in CONTROL_DEFAULTS:
                raise InputError(f"no neutral value for input '{spec.name}' to calibrate with")
            feeds[spec.name] = np.full((len(crops),) + tuple(spec.shape[1:]), CONTROL_DEFAULTS[spec.name], spec.dtype)
    return feeds


def float_convs(model) -> list[str]:
    """Conv nodes that stay float: the toRGB convs (three output channels)."""
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.op_type == "Conv" and len(n.input) > 1 and weights.get(n.input[1], (0,))[0] == 3]


def quantize(model_path: str | Path, calib_dir: str | Path, output: str | Path, *, max_images: int = 32,
             keep_float: list[str] | None = None, log: Callable = print) -> dict[str, str]:
    """Write the int8 Q/DQ graph of `model_path` to `output`; returns the metadata added."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    model_path, output = Path(model_path), Path(output)
    if output.resolve() == model_path.resolve():
        raise InputError(f"{output}: would overwrite the input graph; choose another -o")
    reference = open_model(model_path, "onnxruntime-cpu")
    if reference.metadata.get("stylert.precision", "fp32") != "fp32" or reference.metadata.get("stylert.flavor") == "plugin":
        raise ModelError(f"{model_path}: quantize a portable fp32 export (this one is "
                         f"{reference.metadata.get('stylert.precision')}, {reference.metadata.get('stylert.flavor')})")
    resolution = int(reference.metadata["stylert.resolution"])
    crops = calibration_crops(calib_dir, resolution, max_images, log)
    feeds = feeds_for_crops(reference.inputs, crops)
    log(f"calibration: {len(crops)} aligned face crop(s) at {resolution}x{resolution} from {calib_dir}")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter([{k: v[i:i + 1] for k, v in feeds.items()} for i in range(len(crops))])

        def get_next(self):
            return next(self.rows, None)

    graph = onnx.load(str(model_path), load_external_data=False)
    excluded = float_convs(graph) + list(keep_float or [])
    unknown = sorted(set(keep_float or []) - {n.name for n in graph.graph.node})
    if unknown:
        raise InputError(f"--keep-float: no node named {unknown} in {model_path}")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.partial")
    logging.disable(logging.WARNING)  # its advice to pre-process goes to the root logger; shape inference is not needed
    try:
        quantize_static(str(model_path), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QInt8, op_types_to_quantize=["Conv"],
                        nodes_to_exclude=excluded, calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    finally:
        logging.disable(logging.NOTSET)
    quantized = open_model(tmp, "onnxruntime-cpu")
    want, got = reference.run(feeds), quantized.run(feeds)
    name = reference.outputs[0].name
    rel = [float(np.linalg.norm(g - w) / max(np.linalg.norm(w), 1e-12)) for g, w in zip(got[name], want[name])]
    mse = np.mean((np.clip(got[name], -1, 1) - np.clip(want[name], -1, 1)) ** 2, axis=tuple(range(1, want[name].ndim)))
    psnr = [float(10 * np.log10(4.0 / max(m, 1e-20))) for m in mse]  # images in [-1, 1]: peak-to-peak 2
    if not np.isfinite(rel).all():
        tmp.unlink()
        raise ModelError(f"{model_path}: the int8 graph gives non-finite outputs on the calibration crops")
    added = {"stylert.precision": "int8", "stylert.int8_source": model_path.name,
             "stylert.int8_calibration_images": str(len(crops)),
             "stylert.int8_rel_error_mean": f"{np.mean(rel):.4g}", "stylert.int8_rel_error_max": f"{np.max(rel):.4g}",
             "stylert.int8_psnr_db_mean": f"{np.mean(psnr):.2f}", "stylert.int8_float_convs": ",".join(excluded)}
    result = onnx.load(str(tmp))
    kept = {p.key: p.value for p in result.metadata_props}
    meta = {**reference.metadata, **kept, **added}
    del result.metadata_props[:]
    for key, value in meta.items():
        result.metadata_props.add(key=key, value=value)
    onnx.save(result, str(tmp))
    tmp.replace(output)
    log(f"int8 vs fp32 on the calibration crops ({name}): relative error mean {np.mean(rel):.3g}, max "
        f"{np.max(rel):.3g}; PSNR mean {np.mean(psnr):.1f} dB; {len(excluded)} conv(s) kept float")
    log(f"wrote {output}")
    try:
        choice = open_model(output, "openvino", precision="auto").precision_choice
        log(f"on this CPU with OpenVINO: {choice.precision}: {choice.reason}")
    except BackendUnavailable:  # no OpenVINO here: the gate runs where the graph is opened
        pass
    return added
