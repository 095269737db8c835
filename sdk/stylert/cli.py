"""The `stylert` command. Runtime subcommands live here; others (e.g. `export`, which needs
torch) register through the `stylert.commands` entry-point group and are loaded by name only."""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import warnings
from importlib.metadata import entry_points
from pathlib import Path

from ._version import __version__
from .calls.inpaint import REGIONS as INPAINT_REGIONS
from .calls.registry import CALLS, FACE_CHOICE, Call, FileInput
from .calls.stylize import REGIONS
from .errors import ModelError, StylertError, UntrainedWeightsWarning
from .runtime.model import BACKENDS, library_logging
from .runtime.precision import MAX_LEVELS, MIN_PSNR_DB, PRECISION_ENV, PRECISIONS
from .video.process import VIDEO_SUFFIXES

PROVIDERS_HELP = (f"backend(s) to try in order, comma-separated: {', '.join(BACKENDS)} (cpu, cuda are short for "
                  "onnxruntime-*); default: chosen for this machine")
PRECISION_HELP = ("OpenVINO's precision: auto (bf16 where this CPU has native bf16 and the model's bf16 output was "
                  f"measured within max {MAX_LEVELS}/255 and {MIN_PSNR_DB:g} dB of f32's, else f32; measured once, "
                  "cached), f32, or bf16 "
                  "(refused without native bf16); default: auto on the automatically chosen backend, else the "
                  "backend's own (STYLERT_PRECISION sets it too)")


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that states each option's default where it has one and the help text does not say it."""

    def _get_help_string(self, action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and action.option_strings and "default" not in text:
            text += " (default: %(default)s)"
        return text


def _parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must look like '0-3,7', got {text!r}") from None
    return seeds


def _cmd_info(args) -> int:
    from .runtime.model import open_model

    try:
        model = open_model(args.model, args.providers)
    except ModelError as exc:
        if "no stylert metadata" not in str(exc):
            raise
        return _describe_plain_onnx(args.model)
    print(f"{model.path}: stylert '{model.call}' model, backend {model.backend}"
          + ("" if args.providers else " (chosen automatically; --providers to override)"))
    choice = model.precision_choice
    print(f"  precision {choice.precision}: {choice.reason}")
    for spec in model.inputs:
        print(f"  input  {spec.describe()}")
    for spec in model.outputs:
        print(f"  output {spec.describe()}")
    for key, value in sorted(model.metadata.items()):
        print(f"  {key} = {value}")
    return 0


def _describe_plain_onnx(path: str) -> int:
    """An ONNX file not made by `stylert export`: its inputs, outputs and opsets (it cannot be run by stylert)."""
    import onnx

    model = onnx.load(path, load_external_data=False)

    def describe(v) -> str:
        t = v.type.tensor_type
        dims = ", ".join(d.dim_param or str(d.dim_value) for d in t.shape.dim)
        return f"{v.name} [{dims}] {onnx.helper.tensor_dtype_to_np_dtype(t.elem_type) if t.elem_type else '?'}"

    print(f"{path}: an ONNX model without stylert metadata (not made by `stylert export`; stylert cannot run it)")
    weights = {i.name for i in model.graph.initializer}
    for v in model.graph.input:
        if v.name not in weights:
            print(f"  input  {describe(v)}")
    for v in model.graph.output:
        print(f"  output {describe(v)}")
    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import)
    print(f"  opsets {opsets}; producer {model.producer_name} {model.producer_version}".rstrip())
    return 0


def _cmd_generate(args) -> int:
    from .calls.generator import Generator
    from .faces.imageio import write_image
    from .faces.pipeline import to_uint8

    gen = Generator(args.model, args.providers)
    if not gen.trained:
        print(f"WARNING: {args.model} has random weights (untrained): the images mean nothing", file=sys.stderr)
    z = gen.z_from_seeds(args.seeds)
    start = time.perf_counter()
    images = to_uint8(gen.generate(z, args.truncation))
    elapsed = time.perf_counter() - start
    for seed, image in zip(args.seeds, images):
        print(f"wrote {write_image(Path(args.output) / f'seed{seed:04d}.png', image)}")
    print(f"{len(args.seeds)} image(s) at {gen.resolution}x{gen.resolution} in {elapsed * 1000:.1f} ms on {gen.backend}")
    return 0


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like '1,4,8', got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {text!r}")
    return values


def _cmd_bench(args) -> int:
    from tqdm import tqdm

    from .tools.bench import bench, format_table, plot, write_json

    backends = [b for b in args.backend.split(",") if b]
    total = len(args.models) * len(args.batch) * (len(backends) + (args.reference and "torch" not in backends))
    with tqdm(total=total, desc="bench", unit="run", file=sys.stderr, disable=args.quiet) as bar:
        try:
            report = bench(args.models, backends, args.batch, threads=args.threads, warmup=args.warmup,
                           duration=args.duration, reference=args.reference, checkpoint=args.checkpoint,
                           pipeline=args.pipeline, loops=args.loops, precision=args.openvino_precision,
                           progress=bar.update)
        except ValueError as exc:
            raise StylertError(str(exc)) from None
    print(format_table(report))
    if args.json:
        write_json(args.json, report, indent=1)
    if args.plot:
        try:
            plot(report, args.plot)
        except RuntimeError as exc:
            raise StylertError(str(exc)) from None
        print(f"wrote {args.plot}")
    return 0


def _cmd_build_engine(args) -> int:
    from .tools.trt_build import EngineOptions, build_engine

    options = EngineOptions(fp16=args.fp16, int8=args.int8, min_batch=args.min_batch,
                            opt_batch=args.opt_batch, max_batch=args.max_batch, plugins=args.plugins or [],
                            timing_cache=args.timing_cache, version_compatible=args.version_compatible,
                            workspace_mb=args.workspace_mb)
    build_engine(args.model, args.output, options)
    return 0


def _cmd_quantize(args) -> int:
    from .tools.quantize import quantize

    quantize(args.model, args.calib, args.output, max_images=args.max_images, keep_float=args.keep_float or [])
    return 0


def _expand_inputs(inputs: list[str], recursive: bool = False) -> list[tuple[Path, Path]]:
    """(file, its path relative to the output folder): files as given, folders as their image files
    (sorted; subfolders with --recursive, keeping their relative paths). What a folder holds that is
    not processed is counted and said."""
    from .faces.imageio import IMAGE_SUFFIXES

    found: list[tuple[Path, Path]] = []
    for item in map(Path, inputs):
        if not item.is_dir():
            found.append((item, Path(item.name)))  # a missing file is reported per file, with the others processed
            continue
        entries = sorted(item.rglob("*") if recursive else item.iterdir())
        files = [p for p in entries if p.is_file()]
        special = [p for p in entries if not p.is_file() and not p.is_dir()]  # broken links, link loops, FIFOs
        hidden = [p for p in files if p.name.startswith(".")]  # e.g. macOS' ._a.jpg, a writer's .a.partial.png
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES and p not in hidden]
        found += [(p, p.relative_to(item)) for p in images]
        others = len(files) - len(images) - len(hidden)
        folders = 0 if recursive else sum(1 for p in entries if p.is_dir())
        if others or hidden or folders or special:
            what = [f"{others} file(s) that are not {'/'.join(s.lstrip('.') for s in IMAGE_SUFFIXES)} images"] if others else []
            what += [f"{len(hidden)} hidden file(s) (names starting with '.')"] if hidden else []
            what += [f"{len(special)} broken link(s) or special file(s) ({', '.join(p.name for p in special[:3])}"
                     f"{', ...' if len(special) > 3 else ''})"] if special else []
            what += [f"{folders} subfolder(s) (--recursive to include them)"] if folders else []
            print(f"{item}: skipped {' and '.join(what)}", file=sys.stderr)
    return found


def _output_paths(inputs: list[tuple[Path, Path]], output: str) -> list[Path]:
    """Where each input's result goes: -o names one file when it has an image extension, else a folder (as does an
    existing folder, or a name ending in '/', whatever its extension). Refuses, before any work, two inputs that
    would write one file."""
    from .faces.imageio import IMAGE_SUFFIXES

    out = Path(output)
    folder = out.is_dir() or output.endswith(("/", os.sep))
    if out.suffix[1:].isalpha() and out.suffix.lower() not in IMAGE_SUFFIXES and not folder:
        raise StylertError(f"-o {output}: cannot write '{out.suffix}' images; use one of {', '.join(IMAGE_SUFFIXES)} "
                           "(or a folder name without an extension)")
    if out.suffix.lower() in IMAGE_SUFFIXES and not folder:
        if len(inputs) != 1:
            raise StylertError(f"-o {output} names one file but {len(inputs)} inputs were given; pass a folder")
        return [out]
    paths = [out / rel for _, rel in inputs]
    seen: dict[Path, Path] = {}
    for (src, _), dst in zip(inputs, paths):
        if dst in seen:
            raise StylertError(f"{seen[dst]} and {src} would both be written to {dst}: rename one, or run them "
                               "with different -o folders")
        seen[dst] = src
    inputs_by_id = {ident: src for src, _ in inputs if (ident := _file_id(src))}
    for (src, _), dst in zip(inputs, paths):
        other = inputs_by_id.get(_file_id(dst))
        if other is not None and _file_id(other) != _file_id(src):  # its own input: refused per file (read_for)
            raise StylertError(f"{dst} is the input {other}: the result of {src} would be written over it; "
                               "choose an output folder outside the inputs")
    return paths


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing file (links followed), None otherwise: one file under any name."""
    try:
        st = path.stat()
    except (OSError, RuntimeError):  # missing, a link loop
        return None
    return (st.st_dev, st.st_ino)


def _check_output_folder(outputs: list[Path]) -> None:
    """Create the output folder(s) and check they are writable, before any network runs."""
    import os

    for folder in sorted({p.parent for p in outputs}):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StylertError(f"{folder}: cannot create the output folder ({exc.strerror or exc})") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StylertError(f"{folder}: the output folder is not writable")


def _groups(pairs: list, size: int) -> list[list]:
    return [pairs[i:i + size] for i in range(0, len(pairs), size)]


def _process_group(model, group: list[tuple[Path, Path]], value, args, options: dict):
    """(src, dst, FaceResult or StylertError) for each file of a group (FaceModel.process_files), and
    the BAFS masks beside each result when asked."""
    if len(group) == 1:  # per-file options (labels) come with one file at a time
        try:
            options = {**options, **FILE_OPTIONS.get(args.command, lambda args, src: {})(args, group[0][0])}
        except StylertError as exc:
            return [(*group[0], exc)]
    out = []
    for src, dst, result in model.process_files(group, value, allow_damaged=args.allow_damaged, **options):
        if options.get("with_masks") and not isinstance(result, StylertError):
            try:
                _save_masks(result, dst)
            except StylertError as exc:
                result = exc
        out.append((src, dst, result))
    return out


def _save_masks(result, dst: Path) -> None:
    import numpy as np

    from .faces.imageio import write_image

    for k, extras in enumerate(result.extras):
        for name, mask in extras.items():
            if name.startswith("mask_spatial_"):
                gray = np.clip(np.rint(mask[0] * 255), 0, 255).astype(np.uint8)
                write_image(dst.with_name(f"{dst.stem}.face{k}.{name}.png"), np.repeat(gray[:, :, None], 3, axis=2),
                            grayscale=True)


def _cmd_faces(args) -> int:
    """Any face call over files and folders (per-file errors, exit status 1 if any file failed),
    a video file, or a camera."""
    from .faces.pipeline import file_report

    call = CALLS[args.command]
    one_video = len(args.inputs) == 1 and Path(args.inputs[0]).suffix.lower() in VIDEO_SUFFIXES
    if not call.video:  # a photo-only call
        if one_video:
            raise StylertError(f"stylert {args.command} works on photos, not videos")
        video = False
    else:
        video = args.camera is not None or one_video
    if not (args.inputs and args.output) and not (video and args.camera is not None):
        raise StylertError("give INPUT... and --output" + (" (or --camera N)" if call.video else ""))
    value = _masks(args) if call.masked else args.value
    model = call.cls(args.model, args.providers, **({"directions": args.directions} if call.name == "edit" else {}))
    model.pipeline.detect_size = args.detect_size or None
    if not model.trained:
        print(f"WARNING: {args.model} has random weights (untrained): the results mean nothing", file=sys.stderr)
    if not args.quiet:
        print(f"{args.model}: running on {model.model.backend}", file=sys.stderr)
    if video:
        return _run_video(model, args)
    found = _expand_inputs(args.inputs, args.recursive)
    if not found:
        raise StylertError("no input images found")
    outputs = _output_paths(found, args.output)
    inputs = [src for src, _ in found]
    options = dict(only_center_face=args.only_center_face, largest_face=args.largest_face, aligned=args.aligned)
    call_options = _call_options(args)
    model.check(value, **call_options)
    options.update(call_options)
    from .faces.imageio import check_output

    for dst in outputs:
        check_output(dst)
    _check_output_folder(outputs)
    if args.batch < 1:
        raise StylertError(f"--batch must be >= 1, got {args.batch}")
    if args.batch > 1 and getattr(args, "regions", None):
        raise StylertError("--batch > 1 does not take --regions (label maps are per photo); use --batch 1")

    def rows():
        for group in _groups(list(zip(inputs, outputs)), args.batch):
            for src, dst, result in _process_group(model, group, value, args, options):
                yield file_report(src, dst, result)

    return _report(rows(), args, len(inputs))


def _report(rows, args, total: int) -> int:
    """Print per-file rows (pipeline.file_report) as they come: `wrote`/`error:` lines or JSON, a
    progress bar, a summary; exit status 1 if any file failed, 130 on Ctrl-C."""
    from tqdm import tqdm

    failures, done, totals = 0, 0, {}  # type: tuple[int, int, dict[str, float]]
    bar = tqdm(total=total, desc=args.command, unit="img", file=sys.stderr,
               disable=total < 2 or args.quiet or args.json or not sys.stderr.isatty())
    try:
        for row in rows:
            bar.update()
            if args.json:
                print(json.dumps(row), flush=True)
            if row["error"]:
                failures += 1
                if not args.json:
                    tqdm.write(f"error: {row['error']}", file=sys.stderr)
                continue
            done += 1
            if row.get("warning") and not args.json:
                tqdm.write(f"warning: {row['warning']}", file=sys.stderr)
            for stage, ms in row["timings_ms"].items():
                totals[stage] = totals.get(stage, 0.0) + ms
            if not (args.json or args.quiet):
                tqdm.write(f"wrote {row['output']} ({len(row['faces']) or 'aligned'} face(s))")
    except KeyboardInterrupt:
        print(f"stylert {args.command}: interrupted: {done} finished, {failures} failed, "
              f"{total - done - failures} not started", file=sys.stderr)
        return 130
    finally:
        bar.close()
    if args.json:
        return 1 if failures else 0
    if done:
        stages = ", ".join(f"{k} {v / done:.1f}" for k, v in totals.items())
        print(f"{done} image(s) processed, {failures} failed; mean ms per image: {stages}")
    else:
        print(f"0 images processed, {failures} failed", file=sys.stderr)
    return 1 if failures else 0


def _needs_ray(command: str):
    try:
        import ray  # noqa: F401
    except ImportError:
        raise StylertError(f"stylert {command} runs on Ray: pip install 'stylert[serve]'") from None


def _cmd_serve(args) -> int:
    _needs_ray("serve")
    from .serving.service import ServeOptions, run

    opts = ServeOptions(host=args.host, port=args.port, replicas=args.replicas, max_batch=args.max_batch,
                        batch_wait_ms=args.batch_wait_ms, gpus_per_replica=args.gpus_per_replica,
                        cpus_per_replica=args.cpus_per_replica, threads=args.threads, providers=args.providers,
                        max_body_mb=args.max_body_mb, address=args.address, precision=args.precision)
    return run(args.models, opts, say=lambda line: print(line, file=sys.stderr, flush=True))


def _batch_controls() -> dict[str, tuple[type, list[str]]]:
    """`stylert batch`'s control options: every call's value and controls, by name (their type, the calls)."""
    out: dict[str, tuple[type, list[str]]] = {}
    for call in CALLS.values():
        for c in ((call.value,) if not call.masked else ()) + call.controls:
            kind, calls = out.get(c.name, (c.kind, []))
            out[c.name] = kind, calls + [call.name]
    return out


def _batch_files() -> dict[str, tuple[FileInput, list[str]]]:
    """`stylert batch`'s file options: every call's files, by name (the file, the calls that take it)."""
    out: dict[str, tuple[FileInput, list[str]]] = {}
    for call in CALLS.values():
        for f in call.files:
            out.setdefault(f.name, (f, []))[1].append(call.name)
    return out


def _cmd_batch(args) -> int:
    """A folder through one face call on Ray Data: the files `stylert <call> IN -o OUT` writes, resumable."""
    from .calls.registry import call_of, parse_controls
    from .faces.imageio import check_output

    _needs_ray("batch")
    call = call_of(args.model)
    names = {*_batch_controls(), "region", *FACE_CHOICE}
    params = {k: str(v) for k, v in vars(args).items() if k in names and v is not None and v is not False}
    value, options = parse_controls(call, params)
    spec = CALLS[call]
    for name, (f, calls) in _batch_files().items():
        if getattr(args, name) and f not in spec.files:
            raise StylertError(f"--{name}: for {' and '.join(calls)} models; {args.model} is a {call} model")
    masks = [f"--{name.replace('_', '-')}" for name in ("mask", "mask_dir") if getattr(args, name)]
    if spec.masked:
        if sum(x is not None for x in (args.mask, args.mask_dir, args.region)) != 1:
            raise StylertError(f"{call} needs one of --mask M.png, --masks DIR, --region NAME")
        value = _masks(args)
        options.update(_read_files(spec, args))
    elif masks:
        raise StylertError(f"{', '.join(masks)}: for {' and '.join(c.name for c in CALLS.values() if c.masked)} "
                           f"models; {args.model} is a {call} model")
    for name in ("concurrency", "batch"):
        if getattr(args, name) < 1:
            raise StylertError(f"--{name} must be >= 1, got {getattr(args, name)}")
    found = _expand_inputs(args.inputs, args.recursive)
    if not found:
        raise StylertError("no input images found")
    pairs = list(zip([src for src, _ in found], _output_paths(found, args.output)))
    for _, dst in pairs:
        check_output(dst)
    from .serving.cluster import check_address

    check_address(args.address)
    _check_output_folder([dst for _, dst in pairs])
    from .serving.batchjob import JobOptions, pending, run

    todo, skipped = pending(pairs, args.overwrite)
    if skipped:
        print(f"skipped {skipped} file(s) already in {args.output} (--overwrite to redo them)", file=sys.stderr)
    if not todo:
        print("nothing to do", file=sys.stderr)
        return 0
    opts = JobOptions(concurrency=args.concurrency, batch=args.batch, cpus_per_worker=args.cpus_per_worker,
                      gpus_per_worker=args.gpus_per_worker, threads=args.threads, providers=args.providers,
                      address=args.address, precision=args.precision)
    return _report(run(args.model, todo, value, options, opts), args, len(todo))


def _run_video(model, args) -> int:
    """A video file (all frames, in order) or a live camera (latest frame wins); audio is not carried."""
    from tqdm import tqdm

    from .video.process import process_camera, process_video

    options = dict(detect_every=args.detect_every)
    if args.camera is not None:
        print(f"camera {args.camera}: Ctrl-C to stop" + (f", writing {args.output}" if args.output else ""), file=sys.stderr)
        summary = process_camera(model, args.value, args.camera, args.output, **options)
    else:
        import cv2

        cap = cv2.VideoCapture(args.inputs[0])
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        cap.release()
        with tqdm(total=total, desc=args.command, unit="frame", disable=args.quiet, file=sys.stderr) as bar:
            summary = process_video(model, args.value, args.inputs[0], args.output,
                                    overlap={"auto": None, "on": True, "off": False}[args.overlap],
                                    smooth=not args.no_smooth, progress=bar.update, **options)
        print(f"wrote {args.output} (video only: audio is not carried over)")
    print(summary.describe())
    return 130 if summary.interrupted else 0


def _face_choice(cmd) -> None:
    which = cmd.add_mutually_exclusive_group()
    which.add_argument("--only-center-face", action="store_true", help="only the face nearest the image center")
    which.add_argument("--largest-face", action="store_true", help="only the largest face")
    which.add_argument("--aligned", action="store_true", help="inputs are already FFHQ-aligned square crops")


def _mask_choice(cmd, call: str, required: bool) -> None:
    masks = cmd.add_mutually_exclusive_group(required=required)
    masks.add_argument("--mask", metavar="M.png", help=f"{call}: one mask for every input (the photo's size; white = "
                                                       "fill)")
    masks.add_argument("--masks", dest="mask_dir", metavar="DIR",
                       help=f"{call}: a mask per input in DIR, named like the input (stem.png)")
    masks.add_argument("--region", choices=list(INPAINT_REGIONS), metavar="NAME",
                       help=f"{call}: a face region from the detected landmarks: {', '.join(INPAINT_REGIONS)}")


def _face_command(sub, call: Call):
    """A face call's command: the arguments every call shares, its value and controls from the registry, and
    the options only the CLI has (CLI_OPTIONS: files it reads, --masks, ...)."""
    name = call.name
    cmd = sub.add_parser(name, help=call.help,
                         description=f"{call.help[0].upper()}{call.help[1:]}; files or folders; errors are per file.")
    cmd.add_argument("inputs", nargs="*", metavar="INPUT",
                     help="image files or folders of images" + (", or one video file (.mp4, .avi, .mov, .mkv, .webm)"
                                                                 if call.video else ""))
    cmd.add_argument("--output", "-o", help="output folder, one image file" + (", or the output video" if call.video
                                                                                 else ""))
    cmd.add_argument(call.model_flag, dest="model", required=True, metavar=call.model_flag.lstrip("-").upper(),
                     help="style pack folder (from `stylert export stylize`)" if call.model_flag == "--pack"
                     else f"{name} model (.onnx from `stylert export {name}`)")
    _face_choice(cmd)
    cmd.add_argument("--providers", help=PROVIDERS_HELP)
    cmd.add_argument("--precision", choices=PRECISIONS, help=PRECISION_HELP)
    cmd.add_argument("--quiet", "-q", action="store_true", help="no progress or per-file lines")
    cmd.add_argument("--recursive", "-r", action="store_true", help="also the images in subfolders (kept in the output)")
    cmd.add_argument("--batch", type=int, default=1, metavar="N",
                     help="photos whose faces go through the network together (default 1)")
    cmd.add_argument("--detect-size", type=int, default=1280, metavar="PX",
                     help="detect faces on a copy scaled to this long side when the photo is larger; 0: full size")
    cmd.add_argument("--json", action="store_true",
                     help="one JSON object per file on stdout (input, output, faces, timings_ms, error, warning)")
    cmd.add_argument("--allow-damaged", action="store_true",
                     help="process images whose data is damaged (cut short: grey areas), with a warning naming each, "
                          "instead of refusing them")
    if call.masked:
        _mask_choice(cmd, name, required=True)
    else:
        v = call.value
        cmd.add_argument(v.flag, dest="value", type=v.kind, default=v.default, required=v.default is None,
                         metavar=v.name[0].upper() if v.kind is float else "NAME", help=v.help)
    exclusive = cmd.add_mutually_exclusive_group() if call.exclusive else None
    for c in call.controls:
        if c.name not in CLI_ELSEWHERE.get(name, ()):
            (exclusive if c.name in call.exclusive else cmd).add_argument(c.flag, type=c.kind, default=c.default,
                                                                          help=c.help)
    for f in call.files:
        cmd.add_argument("--" + f.name, metavar=f.metavar, help=f.help)
    CLI_OPTIONS.get(name, NO_OPTIONS)[0](cmd)
    if call.video:
        group = cmd.add_argument_group("video and camera")
        group.add_argument("--camera", type=int, metavar="N", help="process live camera N (stale frames are dropped)")
        group.add_argument("--detect-every", type=int, default=10, help="run the face detector every N frames (default 10)")
        group.add_argument("--no-smooth", action="store_true", help="do not smooth landmarks over time")
        group.add_argument("--overlap", choices=["auto", "on", "off"], default="auto",
                           help="detect/align beside the network: auto = on for GPU providers and cameras, off on the CPU")
    cmd.set_defaults(func=_cmd_faces)
    return cmd


def _call_options(args) -> dict:
    """The call's keyword options: the registry's controls and files (read here), and what only the CLI has."""
    call = CALLS[args.command]
    options = {c.name: getattr(args, c.name) for c in call.controls
               if c.name not in CLI_ELSEWHERE.get(call.name, ()) and getattr(args, c.name) is not None}
    return {**options, **_read_files(call, args), **CLI_OPTIONS.get(call.name, NO_OPTIONS)[1](args)}


def _read_files(call: Call, args) -> dict:
    """The call's files given as options (an exemplar, a sketch), read as the call takes them."""
    return {f.name: f.read(getattr(args, f.name)) for f in call.files if getattr(args, f.name)}


def _retouch_args(cmd) -> None:
    cmd.add_argument("--masks", dest="with_masks", action="store_true",
                     help="also write the BAFS spatial masks (model exported --with-masks)")


def _retouch_options(args) -> dict:
    return {"with_masks": True} if args.with_masks else {}


def _stylize_args(cmd) -> None:
    cmd.add_argument("--regions", help=f"region-local transfer, comma-separated from: {', '.join(REGIONS)}")
    cmd.add_argument("--labels", metavar="FILE|DIR",
                     help="face-parsing label map(s) for --regions (CelebAMask-HQ classes, a PNG of label values): "
                          "a file for one input, or a folder holding INPUT_STEM.png per input")


def _stylize_options(args) -> dict:
    options = {}
    if args.regions:
        options["regions"] = [r.strip() for r in args.regions.split(",") if r.strip()]
        if not args.labels:
            raise StylertError("--regions needs --labels (face-parsing label maps); stylert ships no face parser")
    elif args.labels:
        raise StylertError("--labels is for --regions")
    return options


def _stylize_labels(args, src: Path) -> dict:
    """The label map of one input, read as integers (the first channel of a colour PNG)."""
    if not args.regions or not args.labels:
        return {}
    from .faces.imageio import read_labels

    labels = Path(args.labels)
    return {"labels": read_labels(labels / f"{src.stem}.png" if labels.is_dir() else labels)}


def _masks(args):
    """Where each photo's mask comes from (--mask, --masks or --region)."""
    from .calls.inpaint import MaskSource

    say = lambda note: print(f"note: {note}", file=sys.stderr)  # noqa: E731
    return MaskSource(file=Path(args.mask) if args.mask else None, folder=Path(args.mask_dir) if args.mask_dir else None,
                      region=args.region, say=say)


def _edit_args(cmd) -> None:
    cmd.add_argument("--attribute", metavar="NAME=STRENGTH", help="an attribute direction and its strength")
    cmd.add_argument("--directions", metavar="D.npz", help="attribute directions, 512 or n x 512 each: a .npz (one per "
                                                          "name) or a .npy (named by its file)")


def _edit_options(args) -> dict:
    options: dict = {}
    if args.attribute:
        name, sep, value = args.attribute.partition("=")
        try:
            options["attribute"], options["strength"] = name, float(value)
        except ValueError:
            raise StylertError(f"--attribute: expected NAME=STRENGTH, got {args.attribute!r}") from None
        if not sep or not name:
            raise StylertError(f"--attribute: expected NAME=STRENGTH, got {args.attribute!r}")
        if not args.directions:
            raise StylertError("--attribute needs --directions D.npz (or NAME.npy): the attribute directions")
    elif args.directions:
        raise StylertError("--directions is for --attribute NAME=STRENGTH")
    return options


FILE_OPTIONS = {"stylize": _stylize_labels}  # options read per input file (one file at a time)
# Per call, what only the CLI has: (add its arguments, its options from them); and the registry's controls the CLI
# takes in another form (edit's strength comes with --attribute NAME=STRENGTH).
CLI_OPTIONS = {"retouch": (_retouch_args, _retouch_options), "stylize": (_stylize_args, _stylize_options),
               "edit": (_edit_args, _edit_options)}
NO_OPTIONS = (lambda cmd: None, lambda args: {})
CLI_ELSEWHERE = {"edit": ("strength",)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stylert", description="StyleGAN2-based portrait editing, fast.")
    parser.add_argument("--version", "-V", action="version", version=f"stylert {__version__}")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="also show what the libraries (ONNX Runtime, OpenVINO, TensorRT) log (before the command)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=functools.partial(argparse.ArgumentParser, formatter_class=DefaultsFormatter))

    info = sub.add_parser("info", help="show a model's inputs, outputs and metadata")
    info.add_argument("model")
    info.add_argument("--providers", help=PROVIDERS_HELP)
    info.add_argument("--precision", choices=PRECISIONS, help=PRECISION_HELP)
    info.set_defaults(func=_cmd_info)

    gen = sub.add_parser("generate", help="sample images from a generator exported --with-mapping")
    gen.add_argument("model")
    gen.add_argument("--seeds", type=_parse_seeds, default=[0], help="e.g. 0-3,7 (default 0)")
    gen.add_argument("--truncation", type=float, default=1.0, help="truncation psi (default 1)")
    gen.add_argument("--output", "-o", required=True, help="output folder")
    gen.add_argument("--providers", help=PROVIDERS_HELP)
    gen.add_argument("--precision", choices=PRECISIONS, help=PRECISION_HELP)
    gen.set_defaults(func=_cmd_generate)

    bn = sub.add_parser("bench", help="latency and throughput of models, the PyTorch reference beside them",
                        description="Benchmark exported models: cold start, p50/p90/p99, throughput, memory, GFLOP/s.")
    bn.add_argument("models", nargs="+", metavar="MODEL", help=".onnx graphs from `stylert export`, or .engine files")
    bn.add_argument("--backend", default="onnxruntime-cpu",
                    help=f"comma-separated, side by side: {', '.join(BACKENDS)}, torch (default onnxruntime-cpu)")
    bn.add_argument("--batch", type=_int_list, default=[1], help="batch sizes, e.g. 1,4,8 (default 1)")
    bn.add_argument("--threads", type=int, default=None,
                    help="intra-op threads (default: OMP_NUM_THREADS where set, else the library's)")
    bn.add_argument("--precision", dest="openvino_precision", choices=PRECISIONS,
                    help="precision of the openvino rows only: auto (measured per model and CPU), f32 or bf16; default "
                         "f32 (openvino-bf16 rows are bf16, the other backends run as they are named)")
    bn.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per row (default 1)")
    bn.add_argument("--duration", type=float, default=3.0, help="seconds of timed runs per row, at least 5 runs (default 3)")
    bn.add_argument("--loops", type=int, default=1, help="runs of the graph per timed iteration, e.g. 3 for GRIG's "
                                                         "three reasoning steps (default 1)")
    bn.add_argument("--reference", action="store_true", help="add the PyTorch reference (needs stylert[export])")
    bn.add_argument("--checkpoint", help="the checkpoint a graph was exported from, for --reference")
    bn.add_argument("--pipeline", metavar="IMAGE", help="also time the whole-photo path per stage on this photo")
    bn.add_argument("--json", metavar="OUT", help="write the report (schema stylert.bench/1)")
    bn.add_argument("--plot", metavar="OUT.png", help="write a latency and stage-breakdown plot (needs matplotlib)")
    bn.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    bn.set_defaults(func=_cmd_bench)

    eng = sub.add_parser("build-engine", help="build a TensorRT engine from an exported model (needs TensorRT 10 or 11)",
                         description="Build a TensorRT engine (plus MODEL.engine.json metadata) for this GPU. The "
                                     "engine has the graph's precision: fp16 from `export --fp16`, int8 from "
                                     "`stylert quantize`.")
    eng.add_argument("model", metavar="MODEL.onnx")
    eng.add_argument("--output", "-o", required=True, metavar="MODEL.engine")
    eng.add_argument("--fp16", action="store_true", help="expect an fp16 graph (refused, with the fix, otherwise)")
    eng.add_argument("--int8", action="store_true", help="expect an int8 Q/DQ graph from `stylert quantize`")
    eng.add_argument("--min-batch", type=int, default=1)
    eng.add_argument("--opt-batch", type=int, default=1)
    eng.add_argument("--max-batch", type=int, default=8)
    eng.add_argument("--plugins", nargs="*", metavar="LIB", help="plugin libraries (for --flavor plugin graphs)")
    eng.add_argument("--timing-cache", metavar="FILE", help="read and update this timing cache")
    eng.add_argument("--version-compatible", action="store_true", help="an engine later TensorRT versions can run")
    eng.add_argument("--workspace-mb", type=int, default=4096)
    eng.set_defaults(func=_cmd_build_engine)

    qnt = sub.add_parser("quantize", help="make an int8 graph (explicit Q/DQ) for TensorRT and ONNX Runtime",
                         description="Quantize an fp32 export to int8 (per-channel symmetric weights, Q/DQ), "
                                     "calibrated on the faces of a folder of photos, and report its error.")
    qnt.add_argument("model", metavar="MODEL.onnx")
    qnt.add_argument("--calib", required=True, metavar="DIR", help="photos with faces (aligned here, like retouch does)")
    qnt.add_argument("--output", "-o", required=True, metavar="MODEL.int8.onnx")
    qnt.add_argument("--max-images", type=int, default=32, help="face crops to calibrate on (default 32)")
    qnt.add_argument("--keep-float", nargs="*", metavar="NODE", help="also keep these Conv nodes in float")
    qnt.set_defaults(func=_cmd_quantize)

    for call in CALLS.values():
        _face_command(sub, call)

    srv = sub.add_parser("serve", help="serve models over HTTP on Ray Serve, batching concurrent requests",
                         description="One Ray Serve application: POST /retouch, /restore, /stylize/<style> (the image "
                                     "file as the body, controls as query parameters), GET /healthz, /models. "
                                     "Needs stylert[serve].")
    srv.add_argument("models", nargs="+", metavar="MODEL", help=".onnx/.engine models or style-pack folders, one per call")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--replicas", type=int, default=1, help="replicas of each model")
    srv.add_argument("--max-batch", type=int, default=8, help="requests batched into one run (and faces per network run, "
                                                                 "up to the model's limit)")
    srv.add_argument("--batch-wait-ms", type=float, default=10.0, help="how long an idle replica's batch waits for more requests (while a batch runs, the "
                          "next one waits for it)")
    srv.add_argument("--gpus-per-replica", type=float, default=0.0, help="GPUs each replica reserves (1 for CUDA/TensorRT)")
    srv.add_argument("--cpus-per-replica", type=float, default=1.0, help="CPUs each replica reserves")
    srv.add_argument("--threads", type=int, help="intra-op threads per replica (default: this machine's cores / replicas)")
    srv.add_argument("--providers", help=PROVIDERS_HELP)
    srv.add_argument("--precision", choices=PRECISIONS, help=PRECISION_HELP)
    srv.add_argument("--max-body-mb", type=float, default=50.0, help="larger request bodies are refused (413) unread")
    srv.add_argument("--address", help="join this Ray cluster (e.g. ray://head:10001 or auto); default: start a local Ray")
    srv.set_defaults(func=_cmd_serve)

    bat = sub.add_parser("batch", help="run a face call over a photo library as a Ray Data job (resumable)",
                         description="Writes what `stylert retouch|restore|stylize|inpaint INPUT -o OUTPUT` writes, on a pool "
                                     "of Ray actors; files already in OUTPUT are skipped. Needs stylert[serve].")
    bat.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    bat.add_argument("--output", "-o", required=True, help="output folder")
    bat.add_argument("--model", required=True,
                     help="a retouch/restore/inpaint model (.onnx, .engine) or a style-pack folder")
    for name, (kind, calls) in _batch_controls().items():
        flag = "--" + name.replace("_", "-")
        bat.add_argument(flag, type=kind, help=f"{', '.join(calls)}: as `stylert {calls[0]} {flag}`")
    _mask_choice(bat, ", ".join(c.name for c in CALLS.values() if c.masked), required=False)
    for name, (f, calls) in _batch_files().items():
        bat.add_argument("--" + name, metavar=f.metavar, help=f"{', '.join(calls)}: as `stylert {calls[0]} --{name}`")
    _face_choice(bat)
    bat.add_argument("--recursive", "-r", action="store_true", help="also the images in subfolders (kept in the output)")
    bat.add_argument("--overwrite", action="store_true", help="redo files already in the output folder")
    bat.add_argument("--concurrency", type=int, default=1, help="actors, each holding the model once")
    bat.add_argument("--batch", type=int, default=4, metavar="N", help="photos per actor call, their faces run together")
    bat.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs each actor reserves")
    bat.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs each actor reserves")
    bat.add_argument("--threads", type=int, help="intra-op threads per actor (default: OMP_NUM_THREADS, which Ray sets "
                     "for its workers)")
    bat.add_argument("--providers", help=PROVIDERS_HELP)
    bat.add_argument("--precision", choices=PRECISIONS, help=PRECISION_HELP)
    bat.add_argument("--address", help="join this Ray cluster; default: start a local Ray")
    bat.add_argument("--quiet", "-q", action="store_true", help="no progress or per-file lines")
    bat.add_argument("--json", action="store_true", help="one JSON object per file on stdout")
    bat.set_defaults(func=_cmd_batch)

    for ep in entry_points(group="stylert.commands"):
        try:
            ep.load()(sub)
        except ImportError as exc:
            sub.add_parser(ep.name, help=f"unavailable: {exc}").set_defaults(func=_unavailable(ep.name, exc))
    return parser


def _unavailable(name, exc):
    def run(args) -> int:
        print(f"stylert {name}: unavailable in this install ({exc}); install stylert[export]", file=sys.stderr)
        return 2
    return run


def _warning_line(message, category, filename, lineno, line=None) -> str:
    """A warning as the CLI prints it: one line, `warning: ...` (stylert's name the file they are about)."""
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "precision", None):  # every model the command opens, bench's processes and Ray's included
        os.environ[PRECISION_ENV] = args.precision
    library_logging(args.verbose)  # the libraries' own log lines and warnings only when asked
    warnings.formatwarning = _warning_line
    warnings.simplefilter("ignore", UntrainedWeightsWarning)  # the commands print their own one-line warning
    try:
        return args.func(args)
    except StylertError as exc:
        print(f"stylert {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `stylert info M | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"stylert {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
