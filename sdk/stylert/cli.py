"""The `stylert` command. Runtime subcommands live here; others (e.g. `export`, which needs
torch) register through the `stylert.commands` entry-point group and are loaded by name only."""
from __future__ import annotations

import argparse
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

from . import __version__
from .errors import StylertError


def _parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must look like '0-3,7', got {text!r}") from None
    return seeds


def _providers(text: str | None):
    return None if text is None else [p for p in text.split(",") if p]


def _cmd_info(args) -> int:
    from .runtime import OnnxModel

    model = OnnxModel(args.model, _providers(args.providers))
    print(f"{model.path}: stylert '{model.call}' model, providers {model.providers}")
    for spec in model.inputs:
        print(f"  input  {spec.describe()}")
    for spec in model.outputs:
        print(f"  output {spec.describe()}")
    for key, value in sorted(model.metadata.items()):
        print(f"  {key} = {value}")
    return 0


def _cmd_generate(args) -> int:
    from .generator import Generator, to_uint8
    from .imageio import write_image

    gen = Generator(args.model, _providers(args.providers))
    if not gen.trained:
        print(f"WARNING: {args.model} has random weights (untrained): the images mean nothing", file=sys.stderr)
    z = gen.z_from_seeds(args.seeds)
    start = time.perf_counter()
    images = to_uint8(gen.generate(z, args.truncation))
    elapsed = time.perf_counter() - start
    for seed, image in zip(args.seeds, images):
        print(f"wrote {write_image(Path(args.output) / f'seed{seed:04d}.png', image)}")
    print(f"{len(args.seeds)} image(s) at {gen.resolution}x{gen.resolution} in {elapsed * 1000:.1f} ms on {gen.providers[0]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stylert", description="StyleGAN2-based portrait editing, fast.")
    parser.add_argument("--version", action="version", version=f"stylert {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="show a model's inputs, outputs and metadata")
    info.add_argument("model")
    info.add_argument("--providers", help="comma-separated: cpu, cuda, or ONNX Runtime names")
    info.set_defaults(func=_cmd_info)

    gen = sub.add_parser("generate", help="sample images from a generator exported --with-mapping")
    gen.add_argument("model")
    gen.add_argument("--seeds", type=_parse_seeds, default=[0], help="e.g. 0-3,7 (default 0)")
    gen.add_argument("--truncation", type=float, default=1.0, help="truncation psi (default 1)")
    gen.add_argument("--output", "-o", required=True, help="output folder")
    gen.add_argument("--providers", help="comma-separated: cpu, cuda, or ONNX Runtime names")
    gen.set_defaults(func=_cmd_generate)

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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except StylertError as exc:
        print(f"stylert {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
