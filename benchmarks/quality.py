"""Restoration quality: PSNR and SSIM of restore(degrade(x)) against x, beside degrade(x) against x.

    python benchmarks/quality.py restore.onnx IMAGES_DIR_OR_FILES... [--degradation vsp|qc] [--seed 0] [--json OUT]

Inputs are aligned face crops (as CelebA-Test ships them); each is resized to the model's
resolution, degraded with a per-image seed (seed + index), restored with `aligned=True`, and
scored with scikit-image's metrics. With untrained (random) weights the numbers mean nothing,
and the report says so; with a trained checkpoint they are comparable to the papers' tables.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import stylert
from stylert.tools.bench import write_json
from stylert.tools.degrade import MODELS
from stylert.faces.imageio import IMAGE_SUFFIXES, read_image


def score(reference: np.ndarray, test: np.ndarray) -> dict:
    return {"psnr": float(peak_signal_noise_ratio(reference, test, data_range=255)),
            "ssim": float(structural_similarity(reference, test, channel_axis=2, data_range=255))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("--degradation", choices=MODELS, default="vsp")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args()

    restorer = stylert.Restorer(args.model, ["cpu"])
    size = restorer.resolution
    paths = []
    for item in map(Path, args.inputs):
        paths += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if item.is_dir() else [item]
    rows = []
    for i, path in enumerate(paths):
        try:
            rgb = read_image(path).rgb
        except stylert.StylertError as exc:
            print(f"skipped: {exc}", file=sys.stderr)
            continue
        clean = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA) if rgb.shape[:2] != (size, size) else rgb
        degraded = stylert.degrade(clean, args.degradation, seed=args.seed + i)
        restored = restorer.restore(degraded.image, channels="rgb", aligned=True).image
        rows.append({"file": str(path), "degradation": degraded.params,
                     "degraded": score(clean, degraded.image), "restored": score(clean, restored)})
    if not rows:
        print("no readable images", file=sys.stderr)
        return 1
    mean = {k: {m: float(np.mean([r[k][m] for r in rows])) for m in ("psnr", "ssim")} for k in ("degraded", "restored")}
    print(f"{len(rows)} image(s) at {size}x{size}, degradation '{args.degradation}' (seed {args.seed}+i)")
    if not restorer.trained:
        print("WARNING: the model has random weights (untrained): these numbers mean nothing about restoration quality")
    print(f"{'':10} {'PSNR dB':>9} {'SSIM':>7}")
    for k in ("degraded", "restored"):
        print(f"{k:10} {mean[k]['psnr']:9.2f} {mean[k]['ssim']:7.4f}")
    if args.json:
        write_json(args.json, {"schema": "stylert.bench.quality/1", "model": restorer.model.metadata,
                               "trained": restorer.trained, "mean": mean, "images": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
