"""Video and camera streams for any face call: frames in, processed frames out, in order.

Per frame, the CPU half (detect every N frames or when tracking is lost, track landmarks with
pyramidal Lucas-Kanade flow in between, smooth them with a One Euro filter, align) runs in one
thread while the network and paste-back of the previous frame run in another; bounded queues
between them give back-pressure.

Modes:
- "queue" (files): `submit` blocks while `max_queue` frames wait; every frame comes out.
- "latest" (live cameras): `submit` never blocks; when the queue is full the oldest waiting frame
  is dropped (counted in `stats.dropped`), so the output follows the newest frames.
Closing: `close(drain=True)` processes what is queued; `close(drain=False)` drops it (counted).
Frames without a face pass through unchanged. Read results as they come (`get`, iteration):
processed frames wait for the caller in an unbounded queue.
"""
from __future__ import annotations

import collections
import math
import queue
import threading
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..errors import InputError, StylertError
from ..faces.detect import Face
from ..faces.pipeline import Chunk, FaceModel, NoFaceError, channel_order, check_image, from_rgb

_STOP = object()


class OneEuroFilter:
    """One Euro filter (Casiez, Roussel, Vogel, CHI 2012) on an array of coordinates.

    Cutoff = min_cutoff + beta * |speed|: slow motion is smoothed hard (no jitter), fast motion
    passes with little lag. min_cutoff in Hz, speed in units per second."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x = self.dx = self.t = None

    @staticmethod
    def _alpha(cutoff, dt: float):
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.x is None:
            self.x, self.dx, self.t = x, np.zeros_like(x), t
            return x
        dt = max(t - self.t, 1e-6)
        dx = (x - self.x) / dt
        self.dx = self.dx + self._alpha(self.d_cutoff, dt) * (dx - self.dx)
        a = self._alpha(self.min_cutoff + self.beta * np.abs(self.dx), dt)
        self.x, self.t = self.x + a * (x - self.x), t
        return self.x


@dataclass
class Track:
    id: int
    face: Face
    filter: OneEuroFilter
    smoothed: np.ndarray


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class FaceTracker:
    """Faces across frames: detection every `detect_every` frames (or when flow tracking fails),
    Lucas-Kanade tracking of the landmarks in between, stable ids, One Euro smoothing."""

    def __init__(self, detector, detect_every: int = 10, smooth: bool = True, min_cutoff: float = 1.0,
                 beta: float = 0.05, max_flow_error: float = 2.0):
        self.detector, self.detect_every, self.smooth = detector, max(1, detect_every), smooth
        self.min_cutoff, self.beta, self.max_flow_error = min_cutoff, beta, max_flow_error
        self.tracks: list[Track] = []
        self.next_id = 0
        self.prev_gray: np.ndarray | None = None
        self.frame = 0
        self.detections = 0

    def _flow(self, gray: np.ndarray) -> bool:
        """Move every track's landmarks by optical flow; False when any point is lost."""
        if self.prev_gray is None or not self.tracks or self.prev_gray.shape != gray.shape:
            return False
        pts = np.concatenate([t.face.landmarks for t in self.tracks]).astype(np.float32).reshape(-1, 1, 2)
        nxt, ok, _ = cv2.calcOpticalFlowPyrLK(self.prev_gray, gray, pts, None, winSize=(21, 21), maxLevel=3)
        back, ok_back, _ = cv2.calcOpticalFlowPyrLK(gray, self.prev_gray, nxt, None, winSize=(21, 21), maxLevel=3)
        error = np.linalg.norm((back - pts).reshape(-1, 2), axis=1)
        if not (ok.all() and ok_back.all() and (error < self.max_flow_error).all()):
            return False
        moved = nxt.reshape(-1, 5, 2).astype(np.float64)
        for track, lm in zip(self.tracks, moved):
            shift = (lm - track.face.landmarks).mean(axis=0)
            track.face = Face(track.face.box + np.tile(shift, 2), lm, track.face.score)
        return True

    def _match(self, detected: list[Face]) -> None:
        """Greedy IoU matching keeps ids; new faces get new ids, vanished ones are dropped."""
        kept: list[Track] = []
        free = list(self.tracks)
        for face in detected:
            best = max(free, key=lambda t: _iou(t.face.box, face.box), default=None)
            if best is not None and _iou(best.face.box, face.box) > 0.3:
                free.remove(best)
                best.face = face
                kept.append(best)
            else:
                kept.append(Track(self.next_id, face, OneEuroFilter(self.min_cutoff, self.beta), face.landmarks))
                self.next_id += 1
        self.tracks = kept

    def update(self, rgb: np.ndarray, t: float) -> list[tuple[int, Face]]:
        """(id, face with smoothed landmarks) for this frame; t in seconds."""
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        tracked = self.frame % self.detect_every != 0 and self._flow(gray)
        if not tracked:
            self._match(self.detector.detect(np.ascontiguousarray(rgb)))
            self.detections += 1
        self.prev_gray, self.frame = gray, self.frame + 1
        out = []
        for track in self.tracks:
            track.smoothed = track.filter(track.face.landmarks, t) if self.smooth else track.face.landmarks
            out.append((track.id, Face(track.face.box, np.array(track.smoothed), track.face.score)))
        return out


@dataclass
class StreamFrame:
    index: int
    image: np.ndarray
    face_ids: list[int]
    landmarks: list[np.ndarray]
    timings_ms: dict[str, float]


@dataclass
class StreamStats:
    submitted: int = 0
    delivered: int = 0
    dropped: int = 0
    failed: int = 0  # frames whose processing raised; get() raises their error in their place
    detections: int = 0
    latency_ms: list[float] = field(default_factory=list)  # submit -> result ready, per delivered frame


class Stream:
    """`Stream(model, value, channels=...)`; `submit(frame)`, then `get()` / iterate results; `close()`."""

    def __init__(self, model: FaceModel, value: float, *, channels: str, fps: float = 30.0, mode: str = "queue",
                 overlap: bool | None = None, max_queue: int = 4, detect_every: int = 10, smooth: bool = True,
                 min_cutoff: float = 1.0, beta: float = 0.05):
        """overlap None (auto): on when the network runs on an accelerator, off on the CPU, where the
        network already uses every core and a second stage only competes with it (measured: README)."""
        if mode not in ("queue", "latest"):
            raise InputError(f"mode must be 'queue' or 'latest', got {mode!r}")
        if fps <= 0:
            raise InputError(f"fps must be > 0, got {fps}")
        if overlap is None:
            overlap = mode == "latest" or model.model.on_gpu
        channels = channel_order(channels)
        self.model, self.channels, self.fps, self.mode, self.overlap = model, channels, fps, mode, overlap
        self.run = model.runner(value)
        self.tracker = FaceTracker(model.pipeline.detector, detect_every, smooth, min_cutoff, beta)
        self.stats = StreamStats()
        self._out: queue.Queue = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()
        if overlap:
            self._inbox: collections.deque = collections.deque()
            self._space = threading.Condition(self._lock)
            self._mid: queue.Queue = queue.Queue(maxsize=1)
            self._threads = [threading.Thread(target=self._prepare_loop, daemon=True),
                             threading.Thread(target=self._network_loop, daemon=True)]
            self.max_queue = max(1, max_queue)
            for th in self._threads:
                th.start()

    # -- the two halves -------------------------------------------------------------------
    def _prepare(self, index: int, frame: np.ndarray, submitted: float):
        rgb = np.ascontiguousarray(check_image(frame, self.channels))
        t = time.perf_counter()
        tracked = self.tracker.update(rgb, index / self.fps)
        timings = {"track": (time.perf_counter() - t) * 1000}
        ids = [i for i, _ in tracked]
        try:
            prep = self.model.pipeline.prepare(rgb, [f for _, f in tracked]) if tracked else None
        except NoFaceError:  # faces too small this frame: pass it through
            prep, ids = None, []
        return index, frame, prep, ids, timings, submitted

    def _finish(self, item) -> StreamFrame:
        index, frame, prep, ids, timings, submitted = item
        if prep is None:
            image = frame
        else:
            t = time.perf_counter()
            out, _ = self.run(Chunk.of(prep))
            timings["network"] = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            rgb = self.model.pipeline.finish(prep, out)
            timings.update(prep.timings)  # align
            timings["paste"] = (time.perf_counter() - t) * 1000
            image = from_rgb(rgb, self.channels)
        landmarks = [f.landmarks for f in prep.faces] if prep is not None else []
        with self._lock:
            self.stats.delivered += 1
            self.stats.detections = self.tracker.detections
            self.stats.latency_ms.append((time.perf_counter() - submitted) * 1000)
        return StreamFrame(index, image, ids, landmarks, timings)

    def _prepare_loop(self) -> None:
        while True:
            with self._space:
                while not self._inbox:
                    self._space.wait()
                item = self._inbox.popleft()
                self._space.notify_all()
            if item is _STOP:
                self._mid.put(_STOP)
                return
            try:
                self._mid.put(self._prepare(*item))
            except Exception as exc:  # a bad frame must not stop the stream or hang get()
                self._mid.put(self._failed(item[0], exc))

    def _network_loop(self) -> None:
        while True:
            item = self._mid.get()
            if item is _STOP:
                self._out.put(_STOP)
                return
            try:
                self._out.put(item if isinstance(item, StylertError) else self._finish(item))
            except Exception as exc:
                self._out.put(self._failed(item[0], exc))

    def _failed(self, index: int, exc: Exception) -> StylertError:
        """Count a frame whose processing raised; its error takes its place in the output."""
        with self._lock:
            self.stats.failed += 1
        return exc if isinstance(exc, StylertError) else StylertError(f"frame {index}: {exc}")

    # -- the caller's side ----------------------------------------------------------------
    def submit(self, frame: np.ndarray) -> None:
        """Queue a copy of a frame (HxWx3 uint8 in the stated channel order), so the caller may reuse
        its buffer at once; see the modes above. A bad frame is not raised here: get() raises its
        error in its place, with overlap on or off."""
        if self._closed:
            raise StylertError("stream is closed")
        with self._lock:
            index = self.stats.submitted
            self.stats.submitted += 1
        item = (index, np.array(frame, copy=True), time.perf_counter())
        if not self.overlap:
            try:
                self._out.put(self._finish(self._prepare(*item)))
            except Exception as exc:
                self._out.put(self._failed(index, exc))
            return
        with self._space:
            if self.mode == "latest":
                while len(self._inbox) >= self.max_queue:
                    self._inbox.popleft()
                    self.stats.dropped += 1
            else:
                while len(self._inbox) >= self.max_queue:
                    self._space.wait()
            self._inbox.append(item)
            self._space.notify_all()

    def get(self, timeout: float | None = None) -> StreamFrame | None:
        """The next processed frame in order; None after close() has delivered everything.
        A frame whose processing failed raises its error here (the stream goes on)."""
        item = self._out.get(timeout=timeout)
        if item is _STOP:
            self._out.put(_STOP)
            return None
        if isinstance(item, StylertError):
            raise item
        return item

    @property
    def closed(self) -> bool:
        return self._closed

    def pending(self) -> int:
        """Frames submitted but not yet delivered, failed or dropped."""
        with self._lock:
            return self.stats.submitted - self.stats.delivered - self.stats.failed - self.stats.dropped

    def close(self, drain: bool = True) -> None:
        """Stop taking frames; drain=True processes the queued ones, False drops them (counted)."""
        if self._closed:
            return
        self._closed = True
        if not self.overlap:
            self._out.put(_STOP)
            return
        with self._space:
            if not drain:
                self.stats.dropped += len(self._inbox)
                self._inbox.clear()
            self._inbox.append(_STOP)
            self._space.notify_all()

    def __iter__(self):
        while (frame := self.get()) is not None:
            yield frame

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close(drain=exc[0] is None)
