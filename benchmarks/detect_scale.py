"""Face detection on large photos: full resolution against the downscaled path (`--detect-size`).

For each photo (default: scikit-image's astronaut, upscaled to 2000, 4000 and 6000 px on the long
side with Lanczos), times MTCNN at full size and on the copy scaled to DETECT_SIZE (median of
--runs), and reports how far the mapped-back landmarks land from the full-resolution ones (max
pixel distance, and relative to the inter-ocular distance). Nothing is asserted.

    python benchmarks/detect_scale.py [PHOTO...] [--sizes 2000,4000,6000] [--runs 3] [--json OUT]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import cv2
import numpy as np

from stylert.tools.bench import machine, write_json
from stylert.faces.imageio import read_image
from stylert.faces.pipeline import DETECT_SIZE, FacePipeline


def timed(pipeline: FacePipeline, rgb: np.ndarray, runs: int):
    times, faces = [], []
    for _ in range(runs):
        t = time.perf_counter()
        faces = pipeline.detect(rgb)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), faces


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="*")
    parser.add_argument("--sizes", default="2000,4000,6000", help="long sides to upscale the astronaut to")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if args.photos:
        photos = {p: read_image(p).rgb for p in args.photos}
    else:
        from skimage import data
        base = data.astronaut()
        photos = {f"astronaut x{int(n) / 512:.1f} ({n}px)": cv2.resize(base, (int(n), int(n)), interpolation=cv2.INTER_LANCZOS4)
                  for n in args.sizes.split(",")}
    full, small = FacePipeline(256, detect_size=None), FacePipeline(256, detect_size=DETECT_SIZE)
    rows = []
    for name, rgb in photos.items():
        full_ms, full_faces = timed(full, rgb, args.runs)
        small_ms, small_faces = timed(small, rgb, args.runs)
        row = {"photo": name, "size": list(rgb.shape[:2]), "full_ms": full_ms, "downscaled_ms": small_ms,
               "faces_full": len(full_faces), "faces_downscaled": len(small_faces)}
        if full_faces and small_faces:
            a = max(full_faces, key=lambda f: f.size).landmarks
            b = min(small_faces, key=lambda f: np.abs(f.landmarks - a).max()).landmarks
            row["landmark_max_px"] = float(np.linalg.norm(a - b, axis=1).max())
            row["landmark_max_rel_iod"] = row["landmark_max_px"] / float(np.linalg.norm(a[0] - a[1]))
        rows.append(row)
        print(f"{name}: detect {full_ms:.0f} ms full, {small_ms:.0f} ms at {DETECT_SIZE}px; "
              f"faces {row['faces_full']}/{row['faces_downscaled']}; landmark error "
              f"{row.get('landmark_max_px', float('nan')):.2f} px ({row.get('landmark_max_rel_iod', float('nan')):.2%} "
              "of the eye distance)", flush=True)
    if args.json:
        write_json(args.json, {"machine": machine(), "detect_size": DETECT_SIZE, "rows": rows}, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
