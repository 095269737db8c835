"""Frames in order: `stream.py` (tracking, smoothing, overlapped stages) and `process.py` (video files, cameras)."""
