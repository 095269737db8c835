"""What a phone app must reproduce around the networks: `pipeline.json` in a phone folder, and the face detector.

The JSON states, for the call exported into the folder: each model file with its inputs and outputs, how a face is
found (MTCNN, the detector stylert ships, converted for the same runtime as the networks), aligned (the
five-point FFHQ template, a similarity transform, the warp), normalised, which inputs are controls (with their
ranges and defaults) and which are random (and how the SDK seeds them), what the output means, and how the crop is
pasted back through a feathered mask. Every number is read from the installed stylert package, whose Python is the
executable reference each step names.
"""
from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import numpy as np
from stylert.faces.detect import MTCNN_MIN_FACE_SIZE, MTCNN_SCALE_FACTOR, MTCNN_THRESHOLDS
from stylert.faces.pipeline import DETECT_SIZE, MIN_FACE_SIZE

from .onnx_export import ExportError

PIPELINE_FORMAT = "stylert.phone/1"
PIPELINE = "pipeline.json"

# What each graph input is; inputs not listed are images or codes the JSON's per-call steps describe.
CONTROLS = {
    "strength": {"range": [0.0, None], "default": 1.0,
                 "meaning": "retouch strength: 0 gives the input back, 1 the trained retouch, above 1 extrapolates"},
    "fidelity": {"range": [0.0, 1.0], "default": 0.0,
                 "meaning": "0 = fully restored, 1 = the input (a blend of the two)"},
    "psi": {"range": [0.0, 1.0], "default": 1.0, "meaning": "truncation of the style toward the average (1 = none)"},
    "truncation_psi": {"range": [0.0, 1.0], "default": 0.7,
                       "meaning": "truncation of w toward the average (1 = none)"},
}
RANDOM = {
    "noise": "standard normal, float32: row k of numpy.random.default_rng(seed).standard_normal((faces, N)) for the "
             "k-th face of the photo (stylert.faces.pipeline.seeded_rows); GRIG: one row per reasoning step, the "
             "same for every face",
    "z": "standard normal, float32; EXE-GAN draws z and noise as one row of code_dim + N values per face "
         "(seeded_rows), z first; the generator's z: default_rng(seed).standard_normal(z_dim)",
}
CALL_OUTPUT = {
    "retouch": "the retouched face crop, [-1, 1]",
    "restore": "the restored face crop, [-1, 1]",
    "inpaint": "the crop with the masked pixels filled, [-1, 1]; outside the mask it equals the input",
    "edit": "the edited crop, [-1, 1]; outside the mask it equals the input",
    "stylize": "the stylized face, [-1, 1]",
    "generator": "a generated image, about [-1, 1] (not clamped); no face pipeline: write it as it is",
}


def write_pipeline(folder: str | Path, call: str, target) -> Path:
    """`pipeline.json` for the phone artifacts in `folder` (their `NAME.ext.json` reports) exported for `call`."""
    from stylert.faces.align import FEATHER_ZERO_BELOW, FFHQ_512, feather_geometry

    folder = Path(folder)
    models = {}
    for report_path in sorted(folder.glob(f"*{_suffix(target)}.json")):
        report = json.loads(report_path.read_text())
        meta = report["metadata"]
        models[meta.get("stylert.role", "network")] = {
            "file": Path(report["path"]).name, "inputs": report["inputs"], "outputs": report["outputs"],
            "size_bytes": report["size_bytes"], "relative_error_vs_pytorch": report["rel"],
            **({"weights": Path(report["path"]).with_suffix(".bin").name, "blobs": report["blobs"]}
               if report.get("blobs") else {}),
            "method": meta.get("stylert.method"), "style": meta.get("stylert.style")}
    if not models:
        raise ExportError(f"{folder}: no {_suffix(target)} artifacts to describe")
    resolution = _resolution(models)
    faces = call != "generator"
    pipeline = {
        "format": PIPELINE_FORMAT, "call": call, "target": target.name, "precision": target.precision,
        "runtime": _runtime(target),
        "models": models,
        "batch": 1,
        "steps": _steps(call, faces),
        "output": {"meaning": CALL_OUTPUT[call], "to_uint8": "clip(rint((y + 1) * 127.5), 0, 255), NCHW -> HWC",
                   "reference": "stylert.faces.pipeline.to_uint8"},
        "controls": {name: spec for name, spec in CONTROLS.items() if _has_input(models, name)},
        "random_inputs": {name: how for name, how in RANDOM.items() if _has_input(models, name)},
    }
    if faces:
        margin, sigma = feather_geometry(resolution)
        pipeline.update({
            "detector": _detector(target),
            "input": {"size": resolution, "channels": "RGB", "layout": "NCHW", "dtype": "float32",
                      "normalise": "x / 127.5 - 1 (uint8 0..255 -> [-1, 1])",
                      "reference": "stylert.faces.pipeline.to_network"},
            "alignment": {"landmarks": "left eye, right eye, nose tip, left mouth corner, right mouth corner "
                                       "(image left/right), photo pixels",
                          "template": (FFHQ_512 * (resolution / 512.0)).round(4).tolist(),
                          "template_at_512": FFHQ_512.tolist(),
                          "transform": "similarity (rotation, uniform scale, translation) taking the landmarks onto "
                                       "the template: least squares, LMEDS-robust (cv2.estimateAffinePartial2D)",
                          "warp": "bilinear, border reflect-101, size x size (cv2.warpAffine)",
                          "reference": "stylert.faces.align.similarity_transform, stylert.faces.align.warp_face"},
            "paste_back": {"feather": {"margin": margin, "sigma": sigma, "zero_below": FEATHER_ZERO_BELOW,
                                       "recipe": "zeros(size, size); ones inside [margin, size - margin); gaussian "
                                                 "blur with sigma (kernel from sigma, cv2.GaussianBlur(.., (0, 0), "
                                                 "sigma)); values below zero_below set to 0",
                                       "reference": "stylert.faces.align.feather_mask"},
                           "composite": "warp the output crop and the feather mask back with the inverse transform "
                                        "(bilinear, constant 0 border) over the crop's bounding box in the photo; "
                                        "out = photo + mask * (crop - photo), rounded and clipped to uint8; pixels "
                                        "where the warped mask is 0 keep the photo's bytes",
                           "masked_calls": "inpaint and edit write the warped crop only inside the photo's mask, "
                                           "no feathering (stylert.faces.align.paste_inside)",
                           "reference": "stylert.faces.align.paste_back"},
        })
    path = folder / PIPELINE
    path.write_text(json.dumps(pipeline, indent=1))
    return path


def _suffix(target) -> str:
    from .mobile import SUFFIX

    return SUFFIX[target.name]


def _runtime(target) -> dict:
    import onnxruntime

    if target.name == "ort-mobile":
        return {"name": "ONNX Runtime Mobile", "checked_with": f"onnxruntime {onnxruntime.__version__}",
                "android": "com.microsoft.onnxruntime:onnxruntime-android", "ios": "onnxruntime-objc (CocoaPods)"}
    from importlib.metadata import version

    if target.name == "ncnn":
        return {"name": "ncnn", "checked_with": f"ncnn {version('ncnn')} (Python wheel), pnnx {version('pnnx')}",
                "android": "ncnn's prebuilt Android library (ncnn-YYYYMMDD-android-vulkan.zip, GitHub releases)",
                "ios": "ncnn's prebuilt iOS framework (ncnn-YYYYMMDD-ios-vulkan.zip, GitHub releases)",
                "inputs": "each input as an ncnn Mat, fed by its blob name (models.*.blobs): without the axis its "
                          "batch_axis names ([1, 3, S, S], batch_axis 0 -> c=3, h=S, w=S), or whole where it is null "
                          "([1, N, D] token tensors -> c=1, h=N, w=D; a [1] control -> one value), as "
                          "ncnn.Mat(x, batch_index=...) does; outputs likewise",
                "checked_options": "float32 storage and arithmetic (use_fp16_storage, use_fp16_packed, "
                                   "use_fp16_arithmetic and use_bf16_storage off); ncnn's defaults on a phone use "
                                   "float16 where the CPU has it"}
    return {"name": "ExecuTorch with XNNPACK", "checked_with": f"executorch {version('executorch')}",
            "android": "org.pytorch:executorch-android", "ios": "ExecuTorch Swift package (executorch, "
            "backend_xnnpack)"}


def _detector(target) -> dict:
    spec = {"method": "MTCNN (P-Net over an image pyramid, R-Net, O-Net), five landmarks",
            "files": [f"detector/{n}{_suffix(target)}" for n in ("pnet", "rnet", "onet")],
            "input": "NHWC float32, (x - 127.5) * 0.0078125, each image transposed: (N, W, H, 3), the networks come "
                     "from a Keras port trained on transposed images; P-Net's outputs come back (1, W', H', C) and "
                     "are transposed back likewise",
            "detect_size": DETECT_SIZE,
            "downscale": "a photo whose long side exceeds detect_size is detected on a copy scaled by s = "
                         "detect_size / long side (area interpolation), each side max(1, round(side * s)), rounding "
                         "half to even; boxes and landmarks map back as full = (small + 0.5) * (full side / small "
                         "side) - 0.5 (stylert.faces.pipeline.FacePipeline.detect)",
            "min_face_size": MTCNN_MIN_FACE_SIZE, "thresholds": list(MTCNN_THRESHOLDS),
            "scale_factor": MTCNN_SCALE_FACTOR, "reference": "stylert.faces.detect.MTCNNDetector",
            "too_small": f"faces whose box's longer side is under {MIN_FACE_SIZE} pixels of the photo (after "
                         "mapping back) are not edited; a photo with no other face fails with 'face too small to "
                         "align' (stylert.faces.pipeline.FacePipeline.select)"}
    if target.name == "ncnn":
        spec["sizes"] = {"pnet_side": "any", "crops_per_run": 1,
                         "rule": "ncnn runs one image at a time, without the batch axis (a (1, W, H, 3) input is a "
                                 "Mat of c=W, h=H, w=3): P-Net each pyramid level as it is, R-Net and O-Net one crop "
                                 "a run; blobs in0 and out0, out1 (O-Net: out0 box, out1 landmarks, out2 scores, the "
                                 "ONNX files' order)"}
    if target.name == "executorch":
        spec["sizes"] = {
            "pnet_side": list(PNET_SIDES), "crops_per_run": DETECTOR_BATCH,
            "rule": f"P-Net takes levels of {PNET_SIDES[0]} to {PNET_SIDES[1]} pixels a side (the first level of a "
                    "photo at detect_size); a 12-pixel side (the last level can round to it) is padded with one row "
                    "or column of zeros at its end and the outputs' last row or column dropped, which gives the "
                    f"12-pixel level's outputs exactly; R-Net and O-Net: at most {DETECTOR_BATCH} crops a run"}
    return spec


def _resolution(models: dict) -> int:
    for spec in models.values():
        for name, shape, _ in spec["inputs"]:
            if len(shape) == 4 and shape[1] == 3:
                return int(shape[-1])
    spec = next(iter(models.values()))
    return int(spec["outputs"][0][1][-1])


def _has_input(models: dict, name: str) -> bool:
    return any(i[0] == name for spec in models.values() for i in spec["inputs"])


def _steps(call: str, faces: bool) -> list[str]:
    if not faces:
        return ["draw z (or ws) as random_inputs says", "run the network", "convert the output to uint8"]
    steps = ["decode the photo to RGB uint8", "detect faces and their five landmarks (detector)",
             "per face: the similarity transform onto the template and the warped crop (alignment)",
             "normalise the crop to [-1, 1], NCHW float32 (input)"]
    if call == "inpaint":
        steps.append("warp the photo's mask with the same transform (nearest), 1 = fill; EXE-GAN: the exemplar "
                     "photo's face through the exemplar model gives codes (else the default codes in the model's "
                     "metadata); GRIG: run the step model `steps` times (default 3), each on the last output")
    if call == "stylize":
        steps.append("encoder: crop -> w; generator: content = w, psi, mix inputs (stylepack.json) -> the style")
    steps += ["set the controls and draw the random inputs from the seed", "run the network(s)",
              "convert the output to uint8 (output) and paste it back (paste_back)"]
    return steps


# The ExecuTorch detector's sizes: P-Net takes pyramid levels of PNET_SIDES pixels a side, up to the first level of
# a photo at the SDK's detection size (a 12-pixel side, the smallest level MTCNN runs, is padded to 13, see
# "detector" in pipeline.json: torch.export cannot give one graph both a 1-pixel and a larger output); R-Net and
# O-Net up to DETECTOR_BATCH crops a run. The file is planned for the upper bounds: loading a P-Net planned for
# 1280-pixel levels took about 70 MB on a 2-core AMD EPYC, one for 2560 about 290 MB.
PNET_SIDES = (13, math.ceil(DETECT_SIZE * 12 / MTCNN_MIN_FACE_SIZE))
DETECTOR_BATCH = 256
# Each network's traced example: R-Net and O-Net at their largest batch, as PyTorch's convolution asks whether the
# batch is at least 16 while ExecuTorch lowers it, and a smaller example would bound the file's batch at 15.
DETECTOR_EXAMPLE = {"pnet.onnx": (1, 97, 130, 3), "rnet.onnx": (DETECTOR_BATCH, 24, 24, 3),
                    "onet.onnx": (DETECTOR_BATCH, 48, 48, 3)}
# Seeded check inputs for each network: sizes at both ends of what the file takes, and between them.
DETECTOR_CHECKS = {"pnet.onnx": [(1, 13, 13, 3), (1, 13, PNET_SIDES[1], 3), (1, PNET_SIDES[1], 13, 3),
                                  (1, PNET_SIDES[1], PNET_SIDES[1], 3), (1, 97, 130, 3)],
                   "rnet.onnx": [(1, 24, 24, 3), (DETECTOR_BATCH, 24, 24, 3), (7, 24, 24, 3)],
                   "onet.onnx": [(1, 48, 48, 3), (DETECTOR_BATCH, 48, 48, 3), (5, 48, 48, 3)]}

# Relative error a detector file may have against the ONNX file it came from: ncnn's float32 round-off reached 8e-6
# on P-Net's 12-pixel level (2-core AMD EPYC Zen 4; its 3x3 convolutions run as Winograd transforms by default), so
# ncnn is held to the fp32 phone tolerance.
DETECTOR_TOLERANCE = {"default": 1e-5, "ncnn": 1e-4}


def _detector_to_ncnn(net, name: str, out: Path) -> tuple[Path, dict]:
    """One MTCNN network, exported from its PyTorch module at batch 1 (the shipped Keras-converted graphs' transposes
    before a flatten come out of pnnx in the wrong order) through pnnx; ncnn's layers take any image size, so P-Net
    converted at one runs every pyramid level. Returns the file and its blobs' batch axes (to_ncnn's)."""
    import tempfile

    import torch

    from .mobile import to_ncnn
    from .onnx_export import export_module

    path = out / Path(name).with_suffix(".ncnn.param").name
    example = torch.zeros((1, *DETECTOR_EXAMPLE[name][1:]))
    arg = next(iter(inspect.signature(net.forward).parameters))
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        onnx_path = Path(tmp) / name
        with torch.no_grad():
            outputs = [f"out{k}" for k in range(len(net(example)))]
        export_module(net, {arg: example}, outputs, onnx_path, metadata={}, dynamic_batch=False)
        axes = to_ncnn(onnx_path, path, [list(example.shape)])
    return path, axes


def convert_detector(folder: str | Path, target) -> list[Path]:
    """The MTCNN networks stylert's detector runs, for `target` (always float32: they are 2 MB), in
    `folder`/detector, each run on its runtime here against the ONNX file it came from on seeded inputs of several
    sizes (within DETECTOR_TOLERANCE; ncnn at one image or crop a run); a .pte with any convolution off XNNPACK
    fails."""
    import onnxruntime as ort
    import torch
    from stylert.faces.detect import MTCNN_FILES, mtcnn_model_dir

    from . import mtcnn
    from .mobile import RUNTIME, _first_line, _run_ncnn, _run_pte, _write_pte, remove_artifact, to_ort

    out = Path(folder) / "detector"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in MTCNN_FILES:
        source = mtcnn_model_dir() / name
        path = out / Path(name).with_suffix(_suffix(target)).name
        checks = DETECTOR_CHECKS[name]
        if target.name == "ncnn":
            checks = [shape for shape in checks if shape[0] == 1]  # one image or crop a run; P-Net at 12 too
            checks += [(1, 12, 12, 3)] if name == "pnet.onnx" else []
            path, axes = _detector_to_ncnn(mtcnn.load(source), name, out)
            run = lambda x: _run_ncnn(path, {"x": torch.from_numpy(x)}, axes)  # noqa: E731
        elif target.name == "ort-mobile":
            to_ort(source, path)
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            run = lambda x: session.run(None, {session.get_inputs()[0].name: x})  # noqa: E731
        else:
            net = mtcnn.load(source)
            arg = next(iter(inspect.signature(net.forward).parameters))  # the input's name: image or crops
            if name == "pnet.onnx":
                sides = [torch.export.Dim(f"{arg}_side{axis}", min=PNET_SIDES[0], max=PNET_SIDES[1]) for axis in "12"]
                dynamic = {arg: {1: sides[0], 2: sides[1]}}
            else:
                dynamic = {arg: {0: torch.export.Dim(f"{arg}_n", min=1, max=DETECTOR_BATCH)}}
            convs, delegated = _write_pte(net, {arg: torch.zeros(DETECTOR_EXAMPLE[name])}, path, "fp32", dynamic)
            if delegated != convs:
                remove_artifact(path)
                raise ExportError(f"{path}: XNNPACK takes {delegated} of its {convs} convolutions; "
                                  "the file was removed")
            run = lambda x: _run_pte(path, {arg: torch.from_numpy(x)})  # noqa: E731
        reference = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
        for k, shape in enumerate(checks):
            feed = np.random.default_rng(7 + k).uniform(-1, 1, shape).astype(np.float32)
            want = reference.run(None, {reference.get_inputs()[0].name: feed})
            try:
                got = run(feed)
            except Exception as exc:  # the runtime's own error, as one line
                remove_artifact(path)
                raise ExportError(f"{path.name} does not run a {shape} input on {RUNTIME[target.name]} here: "
                                  f"{_first_line(exc)}; the file was removed") from exc
            for a, b in zip(got, want):
                allowed = DETECTOR_TOLERANCE.get(target.name, DETECTOR_TOLERANCE["default"])
                if not (a.shape == b.shape and np.linalg.norm(a - b) <= allowed * max(np.linalg.norm(b), 1e-12)):
                    remove_artifact(path)
                    raise ExportError(f"{path}: differs from {source.name} on a {shape} input; the file was removed")
        written.append(path)
    return written
