"""Which parts of the VSP restorer take float16 weights: each part's weights rounded to float16 alone, in PyTorch.

Builds the restorer (seeded random weights) at a resolution, runs it in float64 as the reference its phone exports
are judged against, then in float32 with the weights of one part at a time rounded to float16 (every parameter of two or
more dimensions and every bias: the convolution and linear weights the fp16 `.pte` stores in float16, plus a few
norm biases; the `.pte` rounds its folded constants, so this approximates it): the encoder, the feature bank, the code
diffuser, the restoration network, then all four. The part that alone goes past fp16's 5e-2 is what keeps
`float32_weights` in the fp16 `.pte` (stylert_export.code_diffuser). Nothing is asserted.

    python benchmarks/vsp_fp16_weights.py --resolution 256 --json vsp-fp16-weights.json
"""
from __future__ import annotations

import argparse
import copy

import torch

from stylert.tools.bench import machine, write_json

PARTS = ("encoder", "bank", "diffuser", "net")


def rounded(model: torch.nn.Module, parts) -> torch.nn.Module:
    """A copy of `model` with the weights and biases of `parts` rounded to float16 (kept in float32)."""
    out = copy.deepcopy(model)
    for part in parts:
        for name, p in getattr(out, part).named_parameters():
            if p.dim() >= 2 or name.endswith("bias"):
                p.data = p.data.half().float()
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--channel-base", type=int, default=32768, help="32768: the published widths")
    parser.add_argument("--encoder-units", default="3,4,14,3", help="e4e's IR-SE units per stage (IR-SE-50: 3,4,14,3)")
    parser.add_argument("--encoder-size", type=int, default=256)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    from stylert_export.cli import _units
    from stylert_export.mobile import PARITY_SEED
    from stylert_export.restore_export import vsp_from_random_init, vsp_inputs

    torch.set_grad_enabled(False)
    model = vsp_from_random_init(args.seed, args.resolution, channel_base=args.channel_base,
                                 encoder_units=_units(args.encoder_units),
                                 encoder_size=args.encoder_size).model.eval()
    inputs = vsp_inputs(model, args.resolution)(1, PARITY_SEED)
    exact = copy.deepcopy(model).double()(**{k: v.double() for k, v in inputs.items()})

    def error(m) -> float:
        return float((m(**inputs).double() - exact).norm() / exact.norm())

    rows = {"none (float32 round-off)": error(model)}
    for parts in [(p,) for p in PARTS] + [PARTS]:
        rows[" + ".join(parts)] = error(rounded(model, parts))
    params = {p: sum(q.numel() for q in getattr(model, p).parameters()) for p in PARTS}
    print(f"VSP restorer {args.resolution}x{args.resolution}, random-init seed {args.seed}, against PyTorch in float64")
    for what, rel in rows.items():
        print(f"  weights in float16: {what:<36} relative error {rel:.2e}")
    print("  parameters: " + ", ".join(f"{p} {n / 1e6:.1f}M" for p, n in params.items()))
    result = {"schema": "stylert.bench.vsp_fp16_weights/1", "machine": machine(), "resolution": args.resolution,
              "seed": args.seed, "relative_error": rows, "parameters": params}
    if args.json:
        write_json(args.json, result, indent=1)
    return result


if __name__ == "__main__":
    main()
