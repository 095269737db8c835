"""Stream throughput of a face model on a synthetic video, with and without stage overlap.

    python benchmarks/stream_fps.py MODEL.onnx [--frames 40] [--size 512] [--json OUT]

The video is scikit-image's astronaut photo moved and scaled over the frames (one face,
detection every 10 frames, tracking in between). Reports fps and per-frame latency for
overlap on (detect/track/align beside the network) and off, in the same run. Frames are
submitted as fast as the queue takes them, so latency includes the time a frame waits queued.
"""
from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np
import skimage.data

import stylert
from stylert.tools.bench import machine
from stylert.video.stream import Stream


def synthetic_video(frames: int, size: int) -> list[np.ndarray]:
    img = skimage.data.astronaut()[:, :, ::-1]
    out = []
    for i in range(frames):
        s = size / 512 * (1.0 + 0.1 * np.sin(i / 10))
        m = np.array([[s, 0, 3 * np.sin(i / 7) * size / 100], [0, s, 2 * np.cos(i / 9) * size / 100]])
        out.append(cv2.warpAffine(img, m, (size, size), borderMode=cv2.BORDER_REFLECT))
    return out


def run(model, frames, overlap: bool) -> dict:
    stream = Stream(model, model.default_value, channels="bgr", fps=30, overlap=overlap)
    start = time.perf_counter()
    for f in frames:
        stream.submit(f)
    stream.close()
    delivered = sum(1 for _ in stream)
    seconds = time.perf_counter() - start
    lat = np.array(stream.stats.latency_ms)
    return {"frames": delivered, "fps": delivered / seconds, "latency_p50_ms": float(np.percentile(lat, 50)),
            "latency_p99_ms": float(np.percentile(lat, 99)), "detections": stream.stats.detections}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--json")
    args = parser.parse_args()
    call = stylert.open_model(args.model, "cpu").call
    model = {"retouch": stylert.Retoucher, "restore": stylert.Restorer}[call](args.model, ["cpu"])
    frames = synthetic_video(args.frames, args.size)
    run(model, frames[:3], True)  # warm-up: sessions, detector
    results = {name: run(model, frames, overlap) for name, overlap in (("overlap", True), ("sequential", False))}
    res = model.resolution
    print(f"{call} {res}x{res} ({'untrained' if not model.trained else 'trained'}), {args.frames} frames of "
          f"{args.size}x{args.size}, CPU (onnxruntime)")
    for name, r in results.items():
        print(f"  {name:10} {r['fps']:6.2f} fps   latency p50 {r['latency_p50_ms']:7.0f} ms  p99 {r['latency_p99_ms']:7.0f} ms"
              f"   {r['detections']} detections")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"schema": "stylert.bench.stream/1", "machine": machine(), "model": model.model.metadata,
                       "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
