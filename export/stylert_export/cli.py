"""`stylert export ...`: registered with the runtime's CLI through the `stylert.commands` entry point.

Nothing here imports torch until a command runs, so `stylert --help` stays fast and torch-free.
"""
from __future__ import annotations

import argparse
import functools
import sys


RANDOM_INIT_HELP = "seeded random weights (untrained; tests, benchmarks)"
OPSET_HELP = "ONNX opset (default 18)"
LAYOUTS = ["auto", "rosinality", "nvlabs"]
TARGETS = ["onnx", "ort-mobile", "executorch", "ncnn"]
MOBILE_NEEDS = ("executorch", "ncnn", "pnnx")


def _source(parser, *before: tuple[str, dict], after: tuple[tuple[str, dict], ...] = ()) -> None:
    """Where the weights come from: the options `before`, --random-init, the options `after`; exactly one."""
    group = parser.add_mutually_exclusive_group(required=True)
    for flag, kwargs in before:
        group.add_argument(flag, **kwargs)
    group.add_argument("--random-init", action="store_true", help=RANDOM_INIT_HELP)
    for flag, kwargs in after:
        group.add_argument(flag, **kwargs)


def _output(parser, metavar: str) -> None:
    parser.add_argument("--output", "-o", required=True, metavar=metavar)


def _opset(parser, help: str = OPSET_HELP) -> None:
    parser.add_argument("--opset", type=int, default=None, help=help)


def _target(parser) -> None:
    parser.add_argument("--target", choices=TARGETS, default="onnx",
                        help="onnx: a graph for stylert's runtime; ort-mobile (ONNX Runtime Mobile, .ort), executorch "
                             "(.pte, XNNPACK) or ncnn (.ncnn.param and .bin; executorch and ncnn: pip install "
                             "'stylert[mobile]'): -o is a folder a phone app ships, each model checked on that runtime "
                             "here")
    parser.add_argument("--precision", choices=["fp32", "fp16", "int8"], default=None, dest="phone_precision",
                        help="phone targets: fp32 (default) or fp16 (.ort: float16 inside; .pte: float16 weights, "
                             "float32 arithmetic; ncnn: float16 weights); executorch also int8 (int8 weights, "
                             "activations quantized as it runs)")


def _phone(args, name: str):
    """(mobile.Target or None, where the export writes): a phone target writes NAME.ort/.pte/.ncnn.param into the -o
    folder."""
    from pathlib import Path

    if args.target == "onnx":
        if args.phone_precision is not None:
            raise ValueError("--precision is for phone targets (--target ort-mobile, executorch or ncnn)")
        return None, Path(getattr(args, "output", None) or args.pack)
    from .mobile import Target

    if getattr(args, "flavor", "portable") != "portable":
        raise ValueError(f"--flavor {args.flavor} is not for phones; --target {args.target} takes the portable flavour")
    if getattr(args, "fp16", False):
        raise ValueError(f"--fp16 writes an fp16 ONNX graph; for --target {args.target} use --precision fp16")
    target = Target(args.target, args.phone_precision or "fp32")
    folder = Path(getattr(args, "output", None) or args.pack)
    if folder.suffix.lower() in (".onnx", ".ort", ".pte", ".param"):
        raise ValueError(f"--target {args.target}: -o is a folder for the app's files, not {folder.name}")
    return target, folder / f"{name}.onnx"


def _wrote(path, target) -> None:
    from .mobile import artifact_path

    print(f"wrote {artifact_path(path, target) if target is not None else path}")


def _phone_folder(folder, call: str, target) -> None:
    """The rest of a phone folder: the face detector for the face calls, on the networks' runtime, and pipeline.json."""
    from .phone_pipeline import convert_detector, write_pipeline

    if target is None:
        return
    if call != "generator":
        for path in convert_detector(folder, target):
            print(f"wrote {path}")
    print(f"wrote {write_pipeline(folder, call, target)}")


FLAVOR_HELP = {
    "portable": "standard ONNX ops (ONNX Runtime, OpenVINO, TensorRT)",
    "plugin": "one stylert::ModulatedConv2d / BAFSBlend node per layer, for TensorRT with stylert's plugins",
    "winograd": "portable ops, 3x3 convs of 256+ channels in Winograd's F(4x4,3x3) form, for CPUs (ONNX Runtime, "
                "OpenVINO f32: faster, more memory)"}


def _flavor(parser, flavors=tuple(FLAVOR_HELP)) -> None:
    parser.add_argument("--flavor", choices=flavors, default="portable",
                        help="; ".join(f"{f}: {FLAVOR_HELP[f]}" for f in flavors))


def _random_init(parser, resolution: int, *, title: str = "random init (also the seed of freshly initialised parts)",
                 resolution_help: str | None = None,
                 channel_base_help: str = "channels at resolution r: min(base / r, max)",
                 channel_max: bool = True, w_dim: bool = True):
    group = parser.add_argument_group(title)
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--resolution", type=int, default=resolution, help=resolution_help)
    group.add_argument("--channel-base", type=int, default=32768, help=channel_base_help)
    if channel_max:
        group.add_argument("--channel-max", type=int, default=512)
    if w_dim:
        group.add_argument("--w-dim", type=int, default=512)
    return group


def _generator_arguments(p) -> None:
    _source(p, ("--checkpoint", dict(metavar="CKPT", help="rosinality .pt or NVlabs .pkl/.pt/.pth checkpoint")))
    p.add_argument("--layout", choices=LAYOUTS, default="auto", help="checkpoint layout (default: detected from the keys)")
    _output(p, "G.onnx")
    _opset(p, "ONNX opset (default 18: ONNX Runtime and TensorRT 10 read it)")
    _flavor(p)
    _target(p)
    p.add_argument("--fp16", action="store_true", help="fp16 convs; mapping, styles and demodulation stay fp32")
    p.add_argument("--with-mapping", action="store_true", help="inputs z [batch, z_dim] and truncation_psi [batch] instead of ws")
    p.add_argument("--conv-clamp", type=float, default=None, help="override the activation clamp (NVlabs default 256)")
    _random_init(p, 256).add_argument("--mapping-layers", type=int, default=8)


def _retouch_arguments(p) -> None:
    _source(p, ("--checkpoint", dict(metavar="CKPT", help="stylert retouch checkpoint (.safetensors)")),
            after=(("--init-gp", dict(metavar="STYLEGAN2_CKPT", help="GP from a rosinality/NVlabs StyleGAN2 checkpoint, "
                                                                      "the rest random: a training start (untrained)")),))
    p.add_argument("--layout", choices=LAYOUTS, default="auto", help="layout of --init-gp")
    _output(p, "retouch.onnx")
    p.add_argument("--with-masks", action="store_true", help="also output the BAFS masks of every level")
    p.add_argument("--save-checkpoint", metavar="PATH", help="also write the model as a stylert .safetensors checkpoint")
    _opset(p)
    _flavor(p)
    _target(p)
    _random_init(p, 1024)


def _restore_arguments(p) -> None:
    p.add_argument("--method", choices=["qc", "vsp"], default="qc",
                   help="qc: QC-StyleGAN (encoders + generator at q = 0); vsp: visual style prompts (e4e, code "
                        "diffuser, StyleGAN2 priors, SMART restoration network; 512 in the public code)")
    _source(p, ("--checkpoint", dict(metavar="CKPT", help="qc: the pSp-style encoder checkpoint of QC-StyleGAN; "
                                                          "vsp: style_encoder_decoder.pt")))
    p.add_argument("--generator", metavar="QC_PKL", help="qc: the QC-StyleGAN generator snapshot (.pkl/.pt)")
    p.add_argument("--code-diffuser", metavar="CKPT", help="vsp: code_diffuser.pt")
    p.add_argument("--restoration-net", metavar="CKPT", help="vsp: restoration_net.pt")
    _output(p, "restore.onnx")
    p.add_argument("--with-quality", action="store_true",
                   help="keep the degradation branch: q input and estimated-quality output (default: sharp-only)")
    p.add_argument("--q-dim", type=int, default=16, help="quality code size for --random-init")
    _opset(p)
    _flavor(p)
    _target(p)
    group = _random_init(p, 256)
    group.add_argument("--encoder-units", default="3,4,14,3", help="vsp: e4e's IR-SE units per stage (IR-SE-50: 3,4,14,3)")
    group.add_argument("--encoder-size", type=int, default=256, help="vsp: e4e's input size (256)")


def _stylize_arguments(p) -> None:
    _source(p, ("--encoder", dict(metavar="PSP_CKPT", help="pSp checkpoint with a W-space encoder "
                                                           "(BackboneEncoderUsingLastLayerIntoW)")))
    p.add_argument("--pack", required=True, metavar="DIR", help="output folder")
    p.add_argument("--style", action="append", required=True, metavar="NAME[=CKPT]",
                   help="a style and its fine-tuned StyleGAN2 checkpoint (rosinality/NVlabs); repeat per style; "
                        "with --random-init only the NAME")
    p.add_argument("--psi", action="append", default=[], metavar="NAME=PSI",
                   help="truncation per style (default: cartoon 0.7, anime 0.6, others 0.9, as in the paper)")
    p.add_argument("--exemplar", action="append", default=[], metavar="NAME=IMAGE",
                   help="the style image the region-local model transfers from (default: G'(w_avg) of the style)")
    local = p.add_mutually_exclusive_group()
    local.add_argument("--local", metavar="CKPT", help="region-local style transfer checkpoint (stylert .safetensors)")
    local.add_argument("--with-local", action="store_true", help="with --random-init: add a random region-local model")
    p.add_argument("--save-local", metavar="PATH", help="also write the region-local model as a .safetensors checkpoint")
    p.add_argument("--layout", choices=LAYOUTS, default="auto", help="generator checkpoint layout")
    p.add_argument("--encoder-size", type=int, default=256, help="the encoder's input size (pSp: 256)")
    _opset(p)
    _flavor(p, ("portable", "winograd"))  # a pack's graphs with no qualifying conv stay portable
    _target(p)
    group = _random_init(p, 1024)
    group.add_argument("--encoder-units", default="3,4,14,3", help="IR-SE units per stage (IR-SE-50: 3,4,14,3)")
    group.add_argument("--local-width", type=int, default=32, help="channels of the region-local model's stages")


def _inpaint_arguments(p) -> None:
    p.add_argument("--method", choices=["exe-gan", "grig"], required=True,
                   help="exe-gan: EXE_GAN_model_256.pt/_512.pt + psp_ffhq_encode.pt; grig: a GRIG .pth")
    _source(p, ("--checkpoint", dict(metavar="CKPT", help="exe-gan: EXE_GAN_model_<size>.pt; grig: the GRIG .pth")))
    p.add_argument("--encoder", metavar="PSP.pt", help="exe-gan: the pSp encoder psp_ffhq_encode.pt")
    _output(p, "inpaint.onnx")
    _opset(p)
    _flavor(p)
    _target(p)
    group = _random_init(p, 256, title="random init", w_dim=False,
                         resolution_help="exe-gan: any power of two from 32; grig: a multiple of 64 (its public model: 256)",
                         channel_base_help="exe-gan: channels min(base / r, --channel-max)")
    group.add_argument("--encoder-units", default="3,4,14,3", help="exe-gan: pSp's IR-SE units per stage (IR-SE-50)")
    group.add_argument("--encoder-size", type=int, default=256, help="exe-gan: pSp's input size (256)")
    group.add_argument("--ngf", type=int, default=64, help="grig: base channels (the public model: 64)")
    group.add_argument("--dim", type=int, default=48, help="grig: Restormer width (48)")
    group.add_argument("--blocks", default="4,6,6,8", help="grig: Restormer blocks per level (4,6,6,8)")
    group.add_argument("--refinement", type=int, default=4, help="grig: Restormer refinement blocks (4)")


def _edit_arguments(p) -> None:
    _source(p, ("--checkpoint", dict(metavar="CKPT", help="a stylert FACEMUG checkpoint (.safetensors, edit_export.py)")),
            ("--encoder", dict(metavar="E4E.pt", help="e4e_trainer's FACEMUG encoder checkpoint (26 channels, "
                                                      "with the StyleGAN2 it was trained against)")))
    _output(p, "edit.onnx")
    p.add_argument("--save-checkpoint", metavar="PATH", help="also write the model as a stylert .safetensors checkpoint")
    _opset(p)
    _flavor(p, ("portable", "winograd"))
    _target(p)
    group = _random_init(p, 256, title="random init (also the seed of the parts --encoder does not hold)",
                         resolution_help="the editing size (the thesis: 256)",
                         channel_base_help="bank channels min(base / r, 512)", channel_max=False, w_dim=False)
    group.add_argument("--bank-resolution", type=int, default=1024, help="the StyleGAN2 feature bank's size (1024)")
    group.add_argument("--encoder-units", default="3,4,14,3", help="e4e's IR-SE units per stage (IR-SE-50)")
    group.add_argument("--encoder-size", type=int, default=256, help="e4e's input size (256)")
    group.add_argument("--aggregation-channels", type=int, default=64, help="c_a, the aggregated feature width (64)")


def _stylize_reference_arguments(p) -> None:
    p.add_argument("--pack", required=True, metavar="DIR")
    p.add_argument("--style", required=True, metavar="NAME")
    p.add_argument("--image", required=True, metavar="IMAGE", help="the reference portrait")
    p.add_argument("--name", required=True, metavar="REF", help="the name to call it by (stylize --reference REF)")
    p.add_argument("--checkpoint", metavar="CKPT", help="the style's generator checkpoint (not needed for random-init packs)")
    p.add_argument("--steps", type=int, default=300, help="optimisation steps (default 300)")
    p.add_argument("--aligned", action="store_true", help="the image is already an FFHQ-aligned square crop")


EXPORT_NEEDS = ("torch", "onnx", "onnxscript", "safetensors", "onnxruntime_extensions")


def _needs_export_deps(command):
    """A runtime-only install has no torch: say how to get it instead of a traceback."""
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in MOBILE_NEEDS:
                print(f"stylert export: error: --target {args.target} needs {exc.name.split('.')[0]}, which is not "
                      "installed: pip install 'stylert[mobile]'", file=sys.stderr)
                return 2
            if exc.name not in EXPORT_NEEDS:
                raise
            print(f"stylert export: error: needs {exc.name}, which is not installed: pip install 'stylert[export]' "
                  "(for CPU-only PyTorch, first: pip install torch==2.13.0)", file=sys.stderr)
            return 2
    return run


def _run(export, describe) -> int:
    """`describe()` -> (source, summary line), then `export(source)`; known failures become one line
    on stderr and exit status 2."""
    from .checkpoints import CheckpointError
    from .onnx_export import ExportError

    try:
        src, summary = describe()
        print(summary, flush=True)
        if not src.trained:
            print(f"WARNING: {UNTRAINED}", file=sys.stderr, flush=True)
        export(src)
    except (CheckpointError, ExportError, ValueError) as exc:
        print(f"stylert export: error: {exc}", file=sys.stderr)
        return 2
    return 0


UNTRAINED = "random weights (untrained): outputs mean nothing; for tests and benchmarks only"


@_needs_export_deps
def _export_retouch(args: argparse.Namespace) -> int:
    from . import retouch_export as rx
    from .onnx_export import DEFAULT_OPSET

    def describe():
        if args.random_init:
            src = rx.from_random_init(args.seed, args.resolution, channel_base=args.channel_base,
                                      channel_max=args.channel_max, w_dim=args.w_dim)
        elif args.init_gp:
            src = rx.from_gp_checkpoint(args.init_gp, args.layout, args.seed)
        else:
            src = rx.from_checkpoint(args.checkpoint)
        cfg = src.model.cfg
        return src, (f"retoucher: {src.description}, {cfg.resolution}x{cfg.resolution}, {cfg.gp.num_ws} ws, "
                     f"{sum(p.numel() for p in src.model.parameters()):,} parameters")

    def export(src):
        if args.save_checkpoint:
            print(f"wrote {rx.save_retoucher(src, args.save_checkpoint)}")
        target, output = _phone(args, "retouch")
        rx.export_retoucher(src, output, with_masks=args.with_masks, opset=args.opset or DEFAULT_OPSET,
                            flavor=args.flavor, target=target)
        _wrote(output, target)
        _phone_folder(output.parent, "retouch", target)

    return _run(export, describe)


@_needs_export_deps
def _export_restore(args: argparse.Namespace) -> int:
    from . import restore_export as rx
    from .onnx_export import DEFAULT_OPSET

    def describe():
        params = lambda src: f"{sum(p.numel() for p in src.model.parameters()):,} parameters"  # noqa: E731
        if args.method == "vsp":
            if args.random_init:
                src = rx.vsp_from_random_init(args.seed, args.resolution, channel_base=args.channel_base,
                                              encoder_units=_units(args.encoder_units), encoder_size=args.encoder_size)
            elif not (args.code_diffuser and args.restoration_net):
                raise ValueError("--method vsp --checkpoint style_encoder_decoder.pt needs --code-diffuser and "
                                 "--restoration-net (the public code's three checkpoints)")
            else:
                src = rx.vsp_from_checkpoints(args.checkpoint, args.code_diffuser, args.restoration_net)
            return src, (f"restorer (visual style prompts): {src.description}, {src.resolution}x{src.resolution}, "
                         f"noise input of {src.model.noise_size:,} values, {params(src)}")
        if args.random_init:
            src = rx.from_random_init(args.seed, args.resolution, channel_base=args.channel_base,
                                      channel_max=args.channel_max, w_dim=args.w_dim, q_dim=args.q_dim)
        elif not args.generator:
            raise ValueError("--checkpoint needs --generator (the QC-StyleGAN snapshot)")
        else:
            src = rx.from_checkpoints(args.checkpoint, args.generator)
        cfg = src.model.decoder.cfg
        return src, (f"restorer (QC-StyleGAN): {src.description}, {cfg.resolution}x{cfg.resolution}, q_dim {src.model.q_dim}, "
                     f"{params(src)}")

    def export(src):
        target, output = _phone(args, "restore")
        rx.export_restorer(src, output, with_quality=args.with_quality, opset=args.opset or DEFAULT_OPSET,
                           flavor=args.flavor, target=target)
        _wrote(output, target)
        _phone_folder(output.parent, "restore", target)

    return _run(export, describe)


@_needs_export_deps
def _export_generator(args: argparse.Namespace) -> int:
    from .generator import export_generator, from_checkpoint, from_random_init
    from .onnx_export import DEFAULT_OPSET

    def describe():
        if args.random_init:
            src = from_random_init(args.seed, args.resolution, channel_base=args.channel_base,
                                   channel_max=args.channel_max, w_dim=args.w_dim, mapping_layers=args.mapping_layers)
        else:
            src = from_checkpoint(args.checkpoint, args.layout, args.conv_clamp)
        cfg = src.generator.cfg
        return src, (f"generator: {src.description} ({src.layout}), {cfg.resolution}x{cfg.resolution}, "
                     f"{cfg.num_ws} ws of {cfg.w_dim}, {sum(p.numel() for p in src.generator.parameters()):,} parameters")

    def export(src):
        target, output = _phone(args, "generator")
        export_generator(src, output, opset=args.opset or DEFAULT_OPSET, fp16=args.fp16,
                         with_mapping=args.with_mapping, flavor=args.flavor, target=target)
        _wrote(output, target)
        _phone_folder(output.parent, "generator", target)

    return _run(export, describe)


def _units(text: str, option: str = "--encoder-units") -> tuple[int, ...]:
    try:
        units = tuple(int(u) for u in text.split(","))
    except ValueError:
        raise ValueError(f"{option}: expected four integers like 3,4,14,3, got {text!r}") from None
    if len(units) != 4 or min(units) < 1:
        raise ValueError(f"{option}: expected four integers >= 1 like 3,4,14,3, got {text!r}")
    return units


def _pairs(items: list[str], what: str, cast=str) -> dict:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"{what}: expected NAME=VALUE, got {item!r}")
        try:
            out[name] = cast(value)
        except ValueError:
            raise ValueError(f"{what}: bad value in {item!r}") from None
    return out


@_needs_export_deps
def _export_stylize(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import stylize_export as sx
    from .onnx_export import DEFAULT_OPSET

    def describe():
        psi = _pairs(args.psi, "--psi", float)
        if args.random_init:
            if any("=" in s for s in args.style):
                raise ValueError("--random-init takes style names only (--style NAME)")
            src = sx.from_random_init(args.seed, args.resolution, args.style, with_local=args.with_local,
                                      channel_base=args.channel_base, channel_max=args.channel_max, w_dim=args.w_dim,
                                      encoder_units=_units(args.encoder_units), encoder_size=args.encoder_size,
                                      local_width=args.local_width, psi=psi)
        else:
            if args.with_local:
                raise ValueError("--with-local is for --random-init; give a trained model with --local CKPT")
            src = sx.from_checkpoints(args.encoder, _pairs(args.style, "--style"), psi=psi, local=args.local,
                                      encoder_size=args.encoder_size, layout=args.layout)
        exemplars = _pairs(args.exemplar, "--exemplar", Path)
        names = {s.name for s in src.styles}
        for name, path in exemplars.items():
            if name not in names:
                raise ValueError(f"--exemplar {name}: no such style; styles: {', '.join(sorted(names))}")
        for s in src.styles:
            s.exemplar = exemplars.get(s.name)
        cfg = src.styles[0].generator.generator.cfg
        params = sum(p.numel() for p in src.encoder.parameters())
        return src, (f"style pack: {src.description}, {cfg.resolution}x{cfg.resolution}, styles "
                     f"{', '.join(f'{s.name} (psi {s.psi})' for s in src.styles)}; encoder {params:,} parameters"
                     + (", region-local model" if src.local is not None else ""))

    def export(src):
        if args.save_local:
            if src.local is None:
                raise ValueError("--save-local needs a region-local model (--with-local or --local)")
            print(f"wrote {sx.save_local(src.local, args.save_local, src.trained, src.description)}")
        target, _ = _phone(args, "stylize")
        manifest = sx.export_pack(src, args.pack, opset=args.opset or DEFAULT_OPSET, flavor=args.flavor,
                                  target=target)
        print(f"wrote {manifest}")
        _phone_folder(args.pack, "stylize", target)

    return _run(export, describe)


@_needs_export_deps
def _export_inpaint(args: argparse.Namespace) -> int:
    from . import inpaint_export as ix
    from .onnx_export import DEFAULT_OPSET

    def describe():
        if args.method == "exe-gan":
            if args.random_init:
                src = ix.exe_from_random_init(args.seed, args.resolution, channel_base=args.channel_base,
                                              channel_max=args.channel_max, encoder_units=_units(args.encoder_units),
                                              encoder_size=args.encoder_size)
            elif not args.encoder:
                raise ValueError("--method exe-gan --checkpoint EXE_GAN_model_256.pt needs --encoder psp_ffhq_encode.pt "
                                 "(the exemplar encoder)")
            else:
                src = ix.exe_from_checkpoints(args.checkpoint, args.encoder)
            cfg = src.graph.cfg
            params = sum(p.numel() for p in src.graph.parameters()) + sum(p.numel() for p in src.exemplar.parameters())
            return src, (f"inpainter (EXE-GAN): {src.description}, {cfg.size}x{cfg.size}, exemplar codes for layers "
                         f"{cfg.psp_start}..{cfg.psp_start + cfg.num_exemplar_codes - 1}, {params:,} parameters")
        if args.encoder:
            raise ValueError("--encoder is EXE-GAN's exemplar encoder; GRIG has none")
        if args.random_init:
            src = ix.grig_from_random_init(args.seed, args.resolution, ngf=args.ngf, dim=args.dim,
                                           blocks=_units(args.blocks, "--blocks"), refinement=args.refinement)
        else:
            src = ix.grig_from_checkpoint(args.checkpoint)
        params = sum(p.numel() for p in src.step.parameters())
        return src, (f"inpainter (GRIG): {src.description}, {src.resolution}x{src.resolution}, one reasoning step per "
                     f"run, {params:,} parameters")

    def export(src):
        opset = args.opset or DEFAULT_OPSET
        target, output = _phone(args, "inpaint")
        if args.method == "exe-gan":
            for path in ix.export_exe_gan(src, output, opset=opset, flavor=args.flavor, target=target):
                _wrote(path, target)
        else:
            _wrote(ix.export_grig(src, output, opset=opset, flavor=args.flavor, target=target), target)
        _phone_folder(output.parent, "inpaint", target)

    return _run(export, describe)


@_needs_export_deps
def _export_edit(args: argparse.Namespace) -> int:
    from . import edit_export as ex
    from .onnx_export import DEFAULT_OPSET

    def describe():
        if args.random_init:
            src = ex.from_random_init(args.seed, args.resolution, bank_resolution=args.bank_resolution,
                                      channel_base=args.channel_base, encoder_units=_units(args.encoder_units),
                                      encoder_size=args.encoder_size, aggregation_channels=args.aggregation_channels)
        elif args.encoder:
            src = ex.from_encoder(args.encoder, args.seed, args.resolution, args.aggregation_channels)
        else:
            src = ex.from_checkpoint(args.checkpoint)
        cfg = src.model.cfg
        params = sum(p.numel() for p in src.model.parameters())
        return src, (f"editor (FACEMUG): {src.description}, {cfg.size}x{cfg.size}, {cfg.num_ws} codes, bank "
                     f"{cfg.bank_resolution}, {params:,} parameters")

    def export(src):
        if args.save_checkpoint:
            print(f"wrote {ex.save_facemug(src, args.save_checkpoint)}")
        target, output = _phone(args, "edit")
        ex.export_edit(src, output, opset=args.opset or DEFAULT_OPSET, flavor=args.flavor, target=target)
        _wrote(output, target)
        _phone_folder(output.parent, "edit", target)

    return _run(export, describe)


@_needs_export_deps
def _export_stylize_reference(args: argparse.Namespace) -> int:
    from stylert.errors import StylertError
    from stylert.faces.imageio import read_image
    from stylert.faces.pipeline import FacePipeline, to_uint8

    from .checkpoints import CheckpointError
    from .onnx_export import ExportError
    from .stylize_export import add_reference, read_manifest

    try:
        resolution = int(read_manifest(args.pack)["resolution"])
        rgb = read_image(args.image).rgb
        if args.aligned:
            import cv2

            face = cv2.resize(rgb, (resolution, resolution), interpolation=cv2.INTER_AREA)
        else:
            face = to_uint8(FacePipeline(resolution).prepare(rgb, None, largest_face=True).crops)[0]
        out = add_reference(args.pack, args.style, face, args.name, checkpoint=args.checkpoint, steps=args.steps)
    except StylertError as exc:
        hint = "" if args.aligned else " (for a portrait the detector misses, crop it and pass --aligned)"
        print(f"stylert export stylize-reference: error: {args.image}: {exc}{hint}", file=sys.stderr)
        return 2
    except (CheckpointError, ExportError, ValueError) as exc:
        print(f"stylert export stylize-reference: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}; use it with: stylert stylize ... --style {args.style} --reference {args.name}")
    return 0


# (name, help, description, its arguments, what it runs): `stylert export NAME`, in this order
COMMANDS = (
    ("generator", "a StyleGAN2 generator (rosinality or NVlabs checkpoint)",
     "Export a StyleGAN2 generator: ws [batch, num_ws, w_dim] -> image [batch, 3, R, R].",
     _generator_arguments, _export_generator),
    ("retouch", "a StyleRetoucher (BAFS) face retoucher",
     "Export a StyleRetoucher: image [batch, 3, R, R] in [-1, 1], strength [batch] -> retouched.",
     _retouch_arguments, _export_retouch),
    ("restore", "a blind face restorer (QC-StyleGAN or visual style prompts)",
     "Export a restorer: image [batch, 3, R, R] in [-1, 1], fidelity [batch] -> restored.",
     _restore_arguments, _export_restore),
    ("stylize", "a style pack: W encoder, one generator per style, optional region-local model",
     "Export a style pack folder (stylepack.json + graphs) for `stylert stylize`.",
     _stylize_arguments, _export_stylize),
    ("inpaint", "an inpainter: EXE-GAN (faces, exemplar-guided) or GRIG (any image)",
     "Export an inpainting model. exe-gan: the generator graph at --output and its exemplar-encoder graph beside it "
     "(NAME.exemplar.onnx); grig: one reasoning step (the runtime runs --steps of them).",
     _inpaint_arguments, _export_inpaint),
    ("edit", "FACEMUG multimodal facial editing (untrained architecture, ready for weights)",
     "Export FACEMUG (thesis ch. 6) as one graph: a masked face edited from any mix of sketch, semantic map, colour, "
     "exemplar, attribute direction and z. No weights were published: --random-init, --encoder (e4e_trainer's "
     "checkpoint for the style encoder and bank, the rest random) or --checkpoint (stylert's layout).",
     _edit_arguments, _export_edit),
    ("stylize-reference", "add a reference code to a style pack (optimisation, offline)",
     "Invert a reference image with a style's generator and store its W+ code in the pack, for reference-guided "
     "stylization.",
     _stylize_reference_arguments, _export_stylize_reference),
)


def register(subparsers) -> None:
    export = subparsers.add_parser("export", help="export a PyTorch model to ONNX (needs torch)",
                                   description="Export a PyTorch model to ONNX, checked against PyTorch on ONNX Runtime.")
    calls = export.add_subparsers(dest="call", required=True, metavar="CALL")
    for name, help, description, add_arguments, run in COMMANDS:
        parser = calls.add_parser(name, help=help, description=description)
        add_arguments(parser)
        parser.set_defaults(func=run)
