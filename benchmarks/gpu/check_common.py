"""What every stage of benchmarks/gpu/check.sh shares: the stage record, its cases, timers and the summary.

A stage is one process (`python -u stage_X.py --out OUTDIR --device cuda|cpu [--quick]`). It makes a
`Stage`, runs its cases inside `stage.case(name)` (an exception or a failed check is that case's
failure, recorded with its error, and the stage goes on) and ends with `stage.finish()`. The record,
OUTDIR/<stage>.json, is rewritten after every case, so a stage killed by its deadline still leaves
what it had done; check.sh then marks it timed out (`python check_common.py finalize ...`).

Environment (tests and dry runs):
  STYLERT_GPU_CHECK_FAIL=stage:text[,stage:text]  a case of that stage whose name contains text raises
  STYLERT_GPU_CHECK_DEADLINE                       seconds this stage has (check.sh sets it from its deadline)
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

STAGES = ["env", "kernels", "layers", "networks", "sdk"]  # cheapest first: the order check.sh runs them
TITLES = {"env": "a. environment", "kernels": "b. kernels vs float64", "layers": "c. modulated-conv layers",
          "networks": "d. whole networks (PyTorch)", "sdk": "e. SDK on ONNX Runtime CUDA"}
ROOT = Path(__file__).resolve().parents[2]


class InjectedFailure(RuntimeError):
    """Raised by a case named in STYLERT_GPU_CHECK_FAIL (to show a failure is recorded and the run goes on)."""


def parse_args(argv=None):
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny shapes (the CPU dry run)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: a stage's own subprocess
    return p.parse_args(argv)


def _write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, path)


class Stage:
    def __init__(self, name: str, args):
        self.name, self.args = name, args
        self.device, self.quick = args.device, args.quick
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.path = self.out / f"{name}.json"
        self.start = time.monotonic()
        budget = float(os.environ.get("STYLERT_GPU_CHECK_DEADLINE", "0") or 0)
        self.deadline = self.start + budget if budget > 0 else None
        self.fail = [s.split(":", 1)[1] for s in os.environ.get("STYLERT_GPU_CHECK_FAIL", "").split(",")
                     if s.startswith(f"{name}:") and ":" in s]
        self.record = {"schema": "stylert.gpucheck/1", "stage": name, "title": TITLES.get(name, name),
                       "status": "running", "device": self.device, "quick": self.quick,
                       "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       "deadline_s": budget or None, "wall_s": None, "figures": {}, "notes": [], "cases": []}
        self.write()
        print(f"== stage {name} ({self.device}{', quick' if self.quick else ''})", flush=True)

    # -- time -------------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def remaining(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()

    # -- record -----------------------------------------------------------------------------------------
    def write(self) -> None:
        self.record["wall_s"] = round(self.elapsed(), 2)
        _write_json(self.path, self.record)

    def note(self, text: str) -> None:
        self.record["notes"].append(text)
        print(f"   note: {text}", flush=True)
        self.write()

    def figure(self, key: str, value) -> None:
        """A key figure: shown in the summary table."""
        self.record["figures"][key] = value
        self.write()

    def skip(self, name: str, reason: str, **info) -> None:
        self.record["cases"].append({"name": name, "status": "skipped", "reason": reason, **info})
        print(f"   skip {name}: {reason}", flush=True)
        self.write()

    @contextlib.contextmanager
    def case(self, name: str, **info):
        """Run one case: `with stage.case("x") as r: r["err"] = ...; r["pass"] = err < tol`. An exception, or
        r["pass"] False, records the case as failed; the stage goes on either way."""
        r: dict = {"name": name, **info}
        t = time.perf_counter()
        try:
            yield r
            for text in self.fail:  # after the body: a contextmanager cannot skip it without raising out of `with`
                if text in name:
                    raise InjectedFailure(f"injected by STYLERT_GPU_CHECK_FAIL={self.name}:{text}")
            passed = r.get("pass", True)
            r["status"] = "ok" if passed else "failed"
            why = r.pop("why", None)
            if not passed and "error" not in r:
                r["error"] = why or "check did not pass"
        except Exception as exc:  # every case is caught: recorded, and the stage goes on
            r["status"] = "failed"
            r["error"] = f"{type(exc).__name__}: {str(exc).strip()[:600]}"
            r["traceback"] = traceback.format_exc(limit=6)[-2000:]
        r["case_s"] = round(time.perf_counter() - t, 3)
        self.record["cases"].append(r)
        brief = {k: v for k, v in r.items() if k not in ("name", "status", "traceback", "case_s")}
        print(f"   {r['status']:7} {name} ({r['case_s']:.2f}s) {_short(brief)}", flush=True)
        self.write()

    def finish(self, status: str | None = None) -> int:
        cases = self.record["cases"]
        failed = [c for c in cases if c["status"] == "failed"]
        if status is None:
            if failed:
                status = f"failed ({len(failed)} of {len(cases)} cases)"
            elif cases and all(c["status"] == "skipped" for c in cases):
                status = "skipped: " + cases[0]["reason"]
            else:
                status = "ok"
        self.record["status"] = status
        self.write()
        print(f"== stage {self.name}: {status} in {self.elapsed():.1f}s", flush=True)
        return 1 if status.startswith("failed") else 0


def _short(d: dict) -> str:
    parts = []
    for k, v in d.items():
        if isinstance(v, float):
            v = f"{v:.3g}"
        elif isinstance(v, (list, dict)):
            v = json.dumps(v, default=str)[:80]
        parts.append(f"{k}={v}")
    return " ".join(parts)[:300]


# -- numbers ----------------------------------------------------------------------------------------------
def rel_error(got, want) -> float:
    """||got - want|| / ||want|| in float64; inf when `got` has a NaN or inf (an unwritten output)."""
    import torch

    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    if not torch.isfinite(got).all():
        return float("inf")
    return float((got - want).norm() / want.norm().clamp_min(1e-30))


def percentiles(times_ms: list[float]) -> dict:
    import numpy as np

    t = np.asarray(times_ms, dtype=np.float64)
    return {"p50_ms": float(np.percentile(t, 50)), "p99_ms": float(np.percentile(t, 99)), "min_ms": float(t.min()),
            "runs": int(t.size)}


def time_iters(fn, device: str, warmup: int, iters: int) -> dict:
    """Per-iteration times: CUDA events around each call, recorded back to back and read after one final
    synchronize (no host synchronisation between iterations); wall clock on the CPU."""
    import torch

    for _ in range(warmup):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        for start, end in events:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        return {**percentiles([s.elapsed_time(e) for s, e in events]), "timer": "cuda events per iteration"}
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return {**percentiles(times), "timer": "wall clock (cpu)"}


def do_bench(fn, device: str, quick: bool) -> dict:
    """Median ms of `fn`: triton.testing.do_bench (CUDA events, L2 flushed between runs) on the GPU, a short
    wall-clock loop on the CPU."""
    if device == "cuda":
        from triton.testing import do_bench as triton_bench

        ms = triton_bench(fn, warmup=10, rep=40, return_mode="median")
        return {"ms": float(ms), "timer": "triton do_bench median"}
    r = time_iters(fn, "cpu", 1, 3 if quick else 10)
    return {"ms": r["p50_ms"], "timer": "wall clock median (cpu)"}


def graph_replay(fn, warmup: int = 3, iters: int = 20) -> tuple[object, dict]:
    """Capture `fn` (static inputs) into a CUDA graph and time its replays with events per replay."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up on a side stream, as the capture needs (cuDNN/cuBLAS handles)
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    r = time_iters(graph.replay, "cuda", 2, iters)
    r["timer"] = "CUDA graph replay, events per replay"
    return out, r


# -- check.sh helpers ---------------------------------------------------------------------------------------
def finalize(out: Path, stage: str, rc: int, deadline: float, wall: float) -> None:
    """After a stage's process ended: keep its record, but say so where it did not finish (killed by its deadline,
    crashed) or never wrote one."""
    path = out / f"{stage}.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {"schema": "stylert.gpucheck/1", "stage": stage, "title": TITLES.get(stage, stage), "figures": {},
                  "notes": [], "cases": []}
    if rc in (124, 137):
        record["status"] = f"timed out after {deadline:g}s deadline"
    elif record.get("status", "running") == "running":
        record["status"] = f"crashed (exit {rc})"
    elif rc not in (0, 1):
        record["status"] = f"{record['status']}; exit {rc}"
    record["wall_s"] = round(wall, 2)
    record["exit_code"] = rc
    _write_json(path, record)


def summary(out: Path, total_s: float | None = None) -> str:
    """One markdown table: each stage's status, wall time, cases and key figures."""
    rows = ["| stage | status | wall s | cases ok/failed/skipped | key figures |", "| --- | --- | ---: | --- | --- |"]
    device = ""
    for stage in STAGES:
        path = out / f"{stage}.json"
        if not path.is_file():
            rows.append(f"| {TITLES[stage]} | not run | | | |")
            continue
        r = json.loads(path.read_text())
        cases = r.get("cases", [])
        counts = [sum(c.get("status") == s for c in cases) for s in ("ok", "failed", "skipped")]
        figs = "; ".join(f"{k} {_fmt(v)}" for k, v in r.get("figures", {}).items())
        status = str(r.get("status", "?")).replace("|", "/")
        rows.append(f"| {TITLES[stage]} | {status} | {r.get('wall_s') or 0:.1f} | {counts[0]}/{counts[1]}/{counts[2]} "
                    f"| {figs.replace('|', '/')} |")
        if stage == "env":
            device = r.get("figures", {}).get("device", "")
    head = f"GPU check on {device or 'unknown device'}" + (f", {total_s:.0f}s in all" if total_s is not None else "")
    text = f"{head}\n\n" + "\n".join(rows) + "\n"
    (out / "summary.md").write_text(text)
    return text


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def main(argv: list[str]) -> int:
    if argv[:1] == ["finalize"]:
        out, stage, rc, deadline, wall = argv[1:6]
        finalize(Path(out), stage, int(rc), float(deadline), float(wall))
        return 0
    if argv[:1] == ["summary"]:
        print(summary(Path(argv[1]), float(argv[2]) if len(argv) > 2 else None))
        return 0
    print("usage: check_common.py finalize OUT STAGE RC DEADLINE WALL | summary OUT [TOTAL_S]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
