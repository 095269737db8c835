"""`stylert export ...`: registered with the runtime's CLI through the `stylert.commands` entry point.

Nothing here imports torch until a command runs, so `stylert --help` stays fast and torch-free.
"""
from __future__ import annotations

import argparse
import functools
import sys


def _random_init_options(parser, resolution: int):
    group = parser.add_argument_group("random init (also the seed of freshly initialised parts)")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--resolution", type=int, default=resolution)
    group.add_argument("--channel-base", type=int, default=32768, help="channels at resolution r: min(base / r, max)")
    group.add_argument("--channel-max", type=int, default=512)
    group.add_argument("--w-dim", type=int, default=512)
    return group


def _flavor_option(parser) -> None:
    parser.add_argument("--flavor", choices=["portable", "plugin"], default="portable",
                        help="portable: standard ONNX ops (ONNX Runtime, TensorRT); plugin: one stylert::ModulatedConv2d "
                             "/ BAFSBlend node per layer, for TensorRT with stylert's plugins")


def register(subparsers) -> None:
    export = subparsers.add_parser("export", help="export a PyTorch model to ONNX (needs torch)",
                                   description="Export a PyTorch model to ONNX, checked against PyTorch on ONNX Runtime.")
    calls = export.add_subparsers(dest="call", required=True, metavar="CALL")
    gen = calls.add_parser("generator", help="a StyleGAN2 generator (rosinality or NVlabs checkpoint)",
                           description="Export a StyleGAN2 generator: ws [batch, num_ws, w_dim] -> image [batch, 3, R, R].")
    source = gen.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="CKPT", help="rosinality .pt or NVlabs .pkl/.pt/.pth checkpoint")
    source.add_argument("--random-init", action="store_true", help="seeded random weights (untrained; tests, benchmarks)")
    gen.add_argument("--layout", choices=["auto", "rosinality", "nvlabs"], default="auto",
                     help="checkpoint layout (default: detected from the keys)")
    gen.add_argument("--output", "-o", required=True, metavar="G.onnx")
    gen.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18: ONNX Runtime and TensorRT 10 read it)")
    _flavor_option(gen)
    gen.add_argument("--fp16", action="store_true", help="fp16 convs; mapping, styles and demodulation stay fp32")
    gen.add_argument("--with-mapping", action="store_true", help="inputs z [batch, z_dim] and truncation_psi [batch] instead of ws")
    gen.add_argument("--conv-clamp", type=float, default=None, help="override the activation clamp (NVlabs default 256)")
    _random_init_options(gen, resolution=256).add_argument("--mapping-layers", type=int, default=8)
    gen.set_defaults(func=_export_generator)

    ret = calls.add_parser("retouch", help="a StyleRetoucher (BAFS) face retoucher",
                           description="Export a StyleRetoucher: image [batch, 3, R, R] in [-1, 1], strength [batch] -> retouched.")
    source = ret.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="CKPT", help="stylert retouch checkpoint (.safetensors)")
    source.add_argument("--random-init", action="store_true", help="seeded random weights (untrained; tests, benchmarks)")
    source.add_argument("--init-gp", metavar="STYLEGAN2_CKPT",
                        help="GP from a rosinality/NVlabs StyleGAN2 checkpoint, the rest random: a training start (untrained)")
    ret.add_argument("--layout", choices=["auto", "rosinality", "nvlabs"], default="auto", help="layout of --init-gp")
    ret.add_argument("--output", "-o", required=True, metavar="retouch.onnx")
    ret.add_argument("--with-masks", action="store_true", help="also output the BAFS masks of every level")
    ret.add_argument("--save-checkpoint", metavar="PATH", help="also write the model as a stylert .safetensors checkpoint")
    ret.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    _flavor_option(ret)
    _random_init_options(ret, resolution=1024)
    ret.set_defaults(func=_export_retouch)

    rst = calls.add_parser("restore", help="a blind face restorer (QC-StyleGAN)",
                           description="Export a restorer: image [batch, 3, R, R] in [-1, 1], fidelity [batch] -> restored.")
    rst.add_argument("--method", choices=["qc"], default="qc",
                     help="qc: QC-StyleGAN (encoders + generator at q = 0)")
    source = rst.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="ENCODER_CKPT", help="the pSp-style encoder checkpoint of QC-StyleGAN")
    source.add_argument("--random-init", action="store_true", help="seeded random weights (untrained; tests, benchmarks)")
    rst.add_argument("--generator", metavar="QC_PKL", help="the QC-StyleGAN generator snapshot (.pkl/.pt), with --checkpoint")
    rst.add_argument("--output", "-o", required=True, metavar="restore.onnx")
    rst.add_argument("--with-quality", action="store_true",
                     help="keep the degradation branch: q input and estimated-quality output (default: sharp-only)")
    rst.add_argument("--q-dim", type=int, default=16, help="quality code size for --random-init")
    rst.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    _flavor_option(rst)
    _random_init_options(rst, resolution=256)
    rst.set_defaults(func=_export_restore)


EXPORT_NEEDS = ("torch", "onnx", "onnxscript", "safetensors", "onnxruntime_extensions")


def _needs_export_deps(command):
    """A runtime-only install has no torch: say how to get it instead of a traceback."""
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ModuleNotFoundError as exc:
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
        rx.export_retoucher(src, args.output, with_masks=args.with_masks, opset=args.opset or DEFAULT_OPSET,
                            flavor=args.flavor)
        print(f"wrote {args.output}")

    return _run(export, describe)


@_needs_export_deps
def _export_restore(args: argparse.Namespace) -> int:
    from . import restore_export as rx
    from .onnx_export import DEFAULT_OPSET

    def describe():
        if args.random_init:
            src = rx.from_random_init(args.seed, args.resolution, channel_base=args.channel_base,
                                      channel_max=args.channel_max, w_dim=args.w_dim, q_dim=args.q_dim)
        elif not args.generator:
            raise ValueError("--checkpoint needs --generator (the QC-StyleGAN snapshot)")
        else:
            src = rx.from_checkpoints(args.checkpoint, args.generator)
        cfg = src.model.decoder.cfg
        return src, (f"restorer (QC-StyleGAN): {src.description}, {cfg.resolution}x{cfg.resolution}, q_dim {src.model.q_dim}, "
                     f"{sum(p.numel() for p in src.model.parameters()):,} parameters")

    def export(src):
        rx.export_restorer(src, args.output, with_quality=args.with_quality, opset=args.opset or DEFAULT_OPSET,
                           flavor=args.flavor)
        print(f"wrote {args.output}")

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
        export_generator(src, args.output, opset=args.opset or DEFAULT_OPSET, fp16=args.fp16,
                         with_mapping=args.with_mapping, flavor=args.flavor)
        print(f"wrote {args.output}")

    return _run(export, describe)
