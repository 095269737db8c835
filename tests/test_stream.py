"""Streams: frames in order, stable ids, tracking, One Euro smoothing, latest-frame-wins, video files."""
import subprocess
import sys

import cv2
import numpy as np
import pytest

import stylert
from stylert.faces.detect import Face
from stylert.video.stream import OneEuroFilter, Stream
from stylert.video.process import process_video


@pytest.fixture(scope="module")
def moving_video(astronaut):
    """24 BGR frames of the astronaut moved and scaled, with each frame's true landmarks."""
    base = stylert.MTCNNDetector().detect(astronaut)[0].landmarks
    frames, truth = [], []
    for i in range(24):
        s = 0.55 + 0.01 * i
        m = np.array([[s, 0, -30 + 2 * i], [0, s, -20 + i]], np.float64)
        frames.append(cv2.warpAffine(astronaut[:, :, ::-1], m, (320, 320), borderMode=cv2.BORDER_REFLECT))
        truth.append(np.c_[base, np.ones(5)] @ m.T)
    return frames, truth


def run_stream(model, frames, **kw):
    stream = Stream(model, 1.0, channels="bgr", **kw)
    out = []
    for f in frames:
        stream.submit(f)
    stream.close()
    out = list(stream)
    return stream, out


def test_every_frame_in_order_with_a_stable_id(retouch_models, moving_video):
    frames, truth = moving_video
    model = stylert.Retoucher(retouch_models["plain"])
    stream, out = run_stream(model, frames, fps=15, detect_every=8, overlap=True)
    assert [f.index for f in out] == list(range(len(frames)))
    assert all(f.face_ids == [0] for f in out)
    assert stream.stats.detections == 3 and stream.stats.dropped == 0
    err = np.mean([np.abs(f.landmarks[0] - t).mean() for f, t in zip(out, truth)])
    print(f"tracked (smoothed) landmarks vs true motion: mean error {err:.2f} px")
    assert err < 4.0
    assert all(f.image.shape == (320, 320, 3) for f in out)


def test_overlap_gives_the_same_frames_as_sequential(retouch_models, moving_video):
    frames, _ = moving_video
    model = stylert.Retoucher(retouch_models["plain"])
    _, a = run_stream(model, frames[:8], fps=15, overlap=True)
    _, b = run_stream(model, frames[:8], fps=15, overlap=False)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b)) and len(a) == len(b) == 8


class NoisyDetector:
    """A static face whose detected landmarks carry Gaussian noise (a detector's frame-to-frame jitter)."""

    def __init__(self, landmarks, sigma, seed=0):
        self.landmarks, self.sigma, self.rng = landmarks, sigma, np.random.default_rng(seed)

    def detect(self, rgb):
        lm = self.landmarks + self.rng.normal(0, self.sigma, self.landmarks.shape)
        lo, hi = lm.min(axis=0), lm.max(axis=0)
        return [Face(np.r_[lo - 40, hi + 40], lm)]


def test_smoothing_reduces_jitter(retouch_models, astronaut):
    landmarks = stylert.MTCNNDetector().detect(astronaut)[0].landmarks
    frame = np.ascontiguousarray(astronaut[:, :, ::-1])
    jitter = {}
    for smooth in (False, True):
        model = stylert.Retoucher(retouch_models["plain"], detector=NoisyDetector(landmarks, 2.0))
        _, out = run_stream(model, [frame] * 40, fps=30, detect_every=1, smooth=smooth)
        lm = np.stack([f.landmarks[0] for f in out[5:]])
        jitter[smooth] = np.linalg.norm(np.diff(lm, axis=0), axis=2).mean()
    factor = jitter[False] / jitter[True]
    print(f"landmark jitter: raw {jitter[False]:.2f} px/frame, One Euro {jitter[True]:.2f} px/frame ({factor:.1f}x lower)")
    assert factor > 3


def test_latest_frame_wins_drops_and_never_blocks(retouch_models, moving_video):
    """With the network held on a gate the test controls, every submit returns (none waits for the network: it has
    delivered nothing yet), the oldest waiting frames are dropped, and after the gate opens the frames come out in
    order, the first (in the network) and the newest among them. Counted, not timed: the timeouts below only keep
    a broken stream from hanging the suite."""
    import threading

    frames, _ = moving_video
    model = stylert.Retoucher(retouch_models["plain"])
    real_runner = model.runner
    gate, started = threading.Event(), threading.Event()

    def runner(value, **kw):
        run = real_runner(value, **kw)

        def gated(crops):
            started.set()
            assert gate.wait(60), "the test never opened the gate"
            return run(crops)

        return gated

    model.runner = runner
    max_queue = 2
    stream = Stream(model, 1.0, channels="bgr", fps=30, mode="latest", max_queue=max_queue)
    stream.submit(frames[0])
    assert started.wait(60), "frame 0 never reached the network"
    submitter = threading.Thread(target=lambda: [stream.submit(f) for f in frames[1:]], daemon=True)
    submitter.start()
    submitter.join(60)
    assert not submitter.is_alive(), "submit waited for the held network"
    assert stream.stats.submitted == len(frames) and stream.stats.delivered == 0  # all in while nothing came out
    # held: frame 0 in the network, at most one prepared frame between the stages, one being prepared, and the queue
    assert stream.stats.dropped >= len(frames) - (3 + max_queue)
    gate.set()
    stream.close()
    out = list(stream)
    assert stream.stats.dropped + len(out) == len(frames) == stream.stats.submitted
    idx = [f.index for f in out]
    assert idx == sorted(idx) and idx[0] == 0 and idx[-1] == len(frames) - 1  # in order; the newest made it
    assert len(out) <= 3 + max_queue


def test_close_without_drain_drops_queued_frames(retouch_models, moving_video):
    frames, _ = moving_video
    model = stylert.Retoucher(retouch_models["plain"])
    stream = Stream(model, 1.0, channels="bgr", fps=15, max_queue=30, overlap=True)
    for f in frames:
        stream.submit(f)
    stream.close(drain=False)
    out = list(stream)
    assert len(out) + stream.stats.dropped == len(frames) and stream.stats.dropped > 0
    with pytest.raises(stylert.StylertError, match="closed"):
        stream.submit(frames[0])


def test_overlap_auto(retouch_models):
    """Auto: off for files on the CPU (the network already uses every core), on for cameras."""
    model = stylert.Retoucher(retouch_models["plain"], ["cpu"])
    queue_stream, live = Stream(model, 1.0, channels="rgb"), Stream(model, 1.0, channels="rgb", mode="latest")
    assert not queue_stream.overlap and live.overlap
    queue_stream.close(), live.close()


def test_one_euro_filter():
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    assert np.allclose([f(np.array([3.0]), t / 30) for t in range(10)], 3.0)
    g = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    values = [g(np.array([0.0 if t == 0 else 10.0]), t / 30)[0] for t in range(120)]
    assert 0 < values[1] < 10 and abs(values[-1] - 10) < 0.01  # lags a step, then converges


def write_video(path, frames, fps=15):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, frames[0].shape[1::-1])
    for f in frames:
        w.write(f)
    w.release()


def test_cli_video_keeps_frames_fps_and_size(retouch_models, moving_video, tmp_path):
    frames, _ = moving_video
    write_video(tmp_path / "in.mp4", frames)
    result = subprocess.run([sys.executable, "-m", "stylert.cli", "retouch", str(tmp_path / "in.mp4"), "-o",
                             str(tmp_path / "out.mp4"), "--model", str(retouch_models["plain"])],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "audio is not carried" in result.stdout and "fps" in result.stdout
    cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == len(frames) and cap.get(cv2.CAP_PROP_FPS) == 15
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (320, 320)
    assert not list(tmp_path.glob(".*partial*"))


def test_interrupted_video_is_still_playable(retouch_models, moving_video, tmp_path):
    frames, _ = moving_video
    write_video(tmp_path / "in.mp4", frames)
    seen = []

    def progress(n):  # Ctrl-C, once, after five frames
        seen.append(n)
        if sum(x for x in seen if x != "raised") >= 5 and "raised" not in seen:
            seen.append("raised")
            raise KeyboardInterrupt

    summary = process_video(stylert.Retoucher(retouch_models["plain"]), 1.0, tmp_path / "in.mp4", tmp_path / "out.mp4",
                            progress=progress)
    assert summary.interrupted and 0 < summary.frames < len(frames)
    cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    ok, frame = cap.read()
    assert ok and frame.shape == (320, 320, 3) and cap.get(cv2.CAP_PROP_FRAME_COUNT) == summary.frames
