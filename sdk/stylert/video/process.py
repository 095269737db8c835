"""Video files and cameras through a `Stream` (OpenCV video I/O).

The output keeps the input's frame rate and size; audio is not carried over (OpenCV reads and
writes pictures only). The file is written under a temporary name and renamed when closed, so
an interrupted run (Ctrl-C) still leaves a playable file of the frames done so far.
"""
from __future__ import annotations

import os
import queue
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import StylertError
from .stream import Stream, StreamStats

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


@dataclass
class VideoSummary:
    frames: int
    seconds: float
    stats: StreamStats
    interrupted: bool = False

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        lat = np.array(self.stats.latency_ms) if self.stats.latency_ms else np.zeros(1)
        return (f"{self.frames} frame(s) in {self.seconds:.1f} s: {self.fps:.2f} fps, latency p50 "
                f"{np.percentile(lat, 50):.0f} ms p99 {np.percentile(lat, 99):.0f} ms, {self.stats.dropped} dropped, "
                f"{self.stats.detections} detection(s)" + (" (interrupted)" if self.interrupted else ""))


def _writer(dst: Path, fps: float, size: tuple[int, int]):
    tmp = dst.with_name(f".{dst.stem}.partial{dst.suffix}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise StylertError(f"{dst}: OpenCV cannot write this video format")
    return writer, tmp


def _pump(stream: Stream, writer, block: bool) -> int:
    """Write every result ready now (or, with block, every remaining one)."""
    written = 0
    while True:
        try:
            frame = stream.get(timeout=None if block else 0)
        except queue.Empty:
            return written
        if frame is None:
            return written
        if writer is not None:
            writer.write(frame.image)
        written += 1


def process_video(model, value: float, src: str | Path, dst: str | Path, *, overlap: bool | None = None,
                  detect_every: int = 10, smooth: bool = True, progress=None) -> VideoSummary:
    """Every frame of `src` through the model's call, in order, into `dst` (mp4v)."""
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise StylertError(f"{src}: no such file")
    cap = cv2.VideoCapture(str(src))
    if not cap.isOpened():
        raise StylertError(f"{src}: not a video OpenCV can read")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer, tmp = _writer(dst, fps, size)
    stream = Stream(model, value, channels="bgr", fps=fps, mode="queue", overlap=overlap,
                    detect_every=detect_every, smooth=smooth)
    written, interrupted, start = 0, False, time.perf_counter()
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            stream.submit(frame)
            done = _pump(stream, writer, block=False)
            written += done
            if progress is not None and done:
                progress(done)
        stream.close(drain=True)
    except KeyboardInterrupt:
        interrupted = True
        stream.close(drain=False)
    finally:
        done = _pump(stream, writer, block=True) if stream.closed else 0
        written += done
        if progress is not None and done:
            progress(done)
        cap.release()
        writer.release()
        if written:
            os.replace(tmp, dst)
        elif tmp.exists():
            tmp.unlink()
    return VideoSummary(written, time.perf_counter() - start, stream.stats, interrupted)


def process_camera(model, value: float, device: int, dst: str | Path | None = None, *, seconds: float | None = None,
                   detect_every: int = 10) -> VideoSummary:
    """A live camera in latest-frame-wins mode (stale frames dropped and counted); Ctrl-C stops it."""
    cap = cv2.VideoCapture(device)
    if not cap.isOpened():
        raise StylertError(f"camera {device}: cannot open")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer, tmp = _writer(Path(dst), fps, size) if dst else (None, None)
    stream = Stream(model, value, channels="bgr", fps=fps, mode="latest", detect_every=detect_every)
    written, interrupted, start = 0, False, time.perf_counter()
    try:
        while seconds is None or time.perf_counter() - start < seconds:
            ok, frame = cap.read()
            if not ok:
                break
            stream.submit(frame)
            written += _pump(stream, writer, block=False)
        stream.close(drain=True)
    except KeyboardInterrupt:
        interrupted = True
        stream.close(drain=False)
    finally:
        written += _pump(stream, writer, block=True) if stream.closed else 0
        cap.release()
        if writer is not None:
            writer.release()
            if written:
                os.replace(tmp, Path(dst))
    return VideoSummary(written, time.perf_counter() - start, stream.stats, interrupted)
