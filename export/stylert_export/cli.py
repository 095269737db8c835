"""`stylert export ...`: registered with the runtime's CLI through the `stylert.commands` entry point.

Nothing here imports torch until a command runs, so `stylert --help` stays fast and torch-free.
"""
from __future__ import annotations

import argparse
import sys


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
    gen.add_argument("--fp16", action="store_true", help="fp16 convs; mapping, styles and demodulation stay fp32")
    gen.add_argument("--with-mapping", action="store_true", help="inputs z [batch, z_dim] and truncation_psi [batch] instead of ws")
    gen.add_argument("--conv-clamp", type=float, default=None, help="override the activation clamp (NVlabs default 256)")
    rnd = gen.add_argument_group("random init")
    rnd.add_argument("--seed", type=int, default=0)
    rnd.add_argument("--resolution", type=int, default=256)
    rnd.add_argument("--channel-base", type=int, default=32768, help="channels at resolution r: min(base / r, max)")
    rnd.add_argument("--channel-max", type=int, default=512)
    rnd.add_argument("--w-dim", type=int, default=512)
    rnd.add_argument("--mapping-layers", type=int, default=8)
    gen.set_defaults(func=_export_generator)


def _export_generator(args: argparse.Namespace) -> int:
    from .checkpoints import CheckpointError
    from .generator import UNTRAINED_WARNING, export_generator, from_checkpoint, from_random_init
    from .onnx_export import DEFAULT_OPSET, ExportError

    try:
        if args.random_init:
            src = from_random_init(args.seed, args.resolution, channel_base=args.channel_base,
                                   channel_max=args.channel_max, w_dim=args.w_dim, mapping_layers=args.mapping_layers)
        else:
            src = from_checkpoint(args.checkpoint, args.layout, args.conv_clamp)
        cfg = src.generator.cfg
        print(f"generator: {src.description} ({src.layout}), {cfg.resolution}x{cfg.resolution}, "
              f"{cfg.num_ws} ws of {cfg.w_dim}, {sum(p.numel() for p in src.generator.parameters()):,} parameters")
        if not src.trained:
            print(f"WARNING: {UNTRAINED_WARNING}", file=sys.stderr)
        export_generator(src, args.output, opset=args.opset or DEFAULT_OPSET, fp16=args.fp16,
                         with_mapping=args.with_mapping)
    except (CheckpointError, ExportError, ValueError) as exc:
        print(f"stylert export: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}")
    return 0
