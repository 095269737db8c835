"""Bounded load test of `stylert serve` on the loopback address, the single call beside it.

    python benchmarks/serve_load.py MODEL --photo PHOTO [--requests 32] [--concurrency 1,4,16]
        [--time-limit 600] [--kill-replica-after K] [--json OUT] [-- SERVE OPTIONS...]

Starts `stylert serve MODEL` on 127.0.0.1 (its own Ray, its own process session), measures its cold
start (launch to a healthy /healthz) and, per concurrency C, sends `--requests` POSTs of PHOTO from C
client threads, stopping at the time limit: p50/p99 latency, requests/s, errors, the batch sizes the
service formed, and whether every response is byte-identical to what the single call (the SDK in
this process, `process_file` as `stylert retouch` runs it) writes for the photo; the single call's
own latency and rate are the reference row. Peak memory is the largest sampled RSS sum of the
service's processes. With --kill-replica-after K, the first replica that answered is killed
(SIGKILL) after K responses of every run: the report says how many requests failed, whether later
ones succeeded without restarting the command, and that no response was corrupted. At the end the
service is stopped with Ctrl-C (SIGINT) and no process of its session may remain.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

LOOPBACK = "127.0.0.1"


def session_processes(sid: int) -> list[int]:
    """Pids of the processes in session `sid` (field 6 of /proc/PID/stat)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[3]) == sid:
                pids.append(int(entry.name))
    return pids


def session_rss_mb(sid: int) -> float:
    total = 0
    for pid in session_processes(sid):
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError):
            continue
    return total / 2 ** 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _interruptible() -> None:
    """In the child: Ctrl-C (SIGINT) acts, as in a terminal's foreground job, even where this process was
    started in the background with SIGINT ignored (which children inherit)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Service:
    """`stylert serve` in its own session on the loopback address: started, waited for, stopped with
    SIGINT to its session (as Ctrl-C would), and checked to leave no process behind."""

    def __init__(self, models: list[str], *serve_args: str, startup_s: float = 180, log: Path | None = None):
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
        self.log = open(log or Path(self.ray_tmp) / "serve.log", "w")
        start = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "stylert.cli", "serve", *map(str, models), "--host", LOOPBACK,
                                      "--port", str(self.port), *serve_args],
                                     env={**os.environ, "RAY_TMPDIR": self.ray_tmp}, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_interruptible)
        self.leftover: list[int] = []
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"stylert serve exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
                if time.perf_counter() - start > startup_s:
                    raise RuntimeError(f"stylert serve not healthy after {startup_s} s:\n{self.output()[-3000:]}")
                try:
                    if request(self.url + "/healthz", timeout=5)[0] == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.5)
        except BaseException:
            self.stop()
            raise
        self.cold_start_s = time.perf_counter() - start

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def stop(self, timeout: float = 90) -> int:
        """Ctrl-C to the service's session; returns its exit status. Processes of the session still
        alive afterwards are recorded in `leftover` and killed (they are ours)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # the exit status (-9) and `leftover` say it did not stop
                self.proc.wait()
        deadline = time.monotonic() + 10
        while session_processes(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        self.leftover = session_processes(self.proc.pid)
        for pid in self.leftover:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def request(url: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 300):
    """(status, headers (case-insensitive), body) of one request; HTTP errors are answers, not exceptions."""
    host = urllib.parse.urlsplit(url).hostname
    if host not in (LOOPBACK, "localhost", "::1"):
        raise ValueError(f"load tests target the loopback address only, not {host}")
    req = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def single_call(model: str, photo: Path, params: dict, runs: int) -> tuple[bytes, dict]:
    """The reference: the SDK call in this process, written as `stylert retouch` writes it; its bytes
    and its sequential latency."""
    from stylert.calls.registry import open_call, parse_controls

    face_model = open_call(model)
    value, options = parse_controls(face_model.call, params)
    out = Path(tempfile.mkdtemp()) / f"single{photo.suffix}"
    times = []
    for _ in range(runs + 1):  # the first is warm-up
        t = time.perf_counter()
        face_model.process_file(photo, out, value, **options)
        times.append((time.perf_counter() - t) * 1000)
    lat = np.array(times[1:])
    return out.read_bytes(), {"requests": runs, "p50_ms": float(np.percentile(lat, 50)),
                              "p99_ms": float(np.percentile(lat, 99)), "requests_per_s": 1000 / float(lat.mean())}


def load(url: str, body: bytes, expected: bytes, requests: int, concurrency: int, time_limit: float,
         kill_after: int | None = None) -> dict:
    """`requests` POSTs from `concurrency` threads, none started after `time_limit` seconds."""
    start = time.perf_counter()
    lock = threading.Lock()
    done: list[dict] = []
    killed: dict = {}

    def one(i: int) -> None:
        if time.perf_counter() - start > time_limit:
            return
        t = time.perf_counter()
        try:
            status, headers, data = request(url, body)
        except OSError as exc:
            status, headers, data = -1, {}, str(exc).encode()
        row = {"i": i, "status": status, "ms": (time.perf_counter() - t) * 1000, "end": time.perf_counter() - start,
               "same": status == 200 and data == expected, "batch": int(headers.get("X-Stylert-Batch", 0) or 0),
               "replica": headers.get("X-Stylert-Replica", ""),
               "error": "" if status == 200 else data[:200].decode(errors="replace")}
        with lock:
            done.append(row)
            if kill_after is not None and len(done) >= kill_after and not killed and row["replica"]:
                pid, host = row["replica"].split("@")
                if host == socket.gethostname():
                    os.kill(int(pid), signal.SIGKILL)
                    killed.update(pid=int(pid), at_s=row["end"], after=len(done))

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(requests)))
    seconds = time.perf_counter() - start
    ok = [r for r in done if r["status"] == 200]
    lat = np.array([r["ms"] for r in ok]) if ok else np.array([np.nan])
    report = {"concurrency": concurrency, "requests": len(done), "not_sent": requests - len(done),
              "ok": len(ok), "errors": len(done) - len(ok), "corrupted": sum(1 for r in ok if not r["same"]),
              "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
              "requests_per_s": len(ok) / seconds, "seconds": seconds,
              "batch_sizes": {str(b): sum(1 for r in ok if r["batch"] == b) for b in sorted({r["batch"] for r in ok})},
              "error_samples": sorted({r["error"] for r in done if r["error"]})[:5]}
    if kill_after is not None:
        after = [r for r in done if killed and r["end"] > killed["at_s"]]
        report["fault"] = {**killed, "failed": report["errors"],
                           "ok_after_kill": sum(1 for r in after if r["status"] == 200),
                           "recovered": any(r["status"] == 200 and r["replica"].split("@")[0] != str(killed["pid"])
                                            for r in after)}
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     epilog="Arguments after -- go to `stylert serve` (e.g. -- --max-batch 8).")
    parser.add_argument("model")
    parser.add_argument("--photo", required=True, type=Path)
    parser.add_argument("--params", default="", help="query parameters, e.g. strength=0.7")
    parser.add_argument("--requests", type=int, default=32, help="requests per concurrency level")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--time-limit", type=float, default=600, help="seconds per concurrency level")
    parser.add_argument("--single-runs", type=int, default=3, help="runs of the in-process single call (reference)")
    parser.add_argument("--kill-replica-after", type=int, metavar="K", help="fault test: SIGKILL a replica after K responses")
    parser.add_argument("--json", type=Path)
    args, serve_args = parser.parse_known_args()
    serve_args = [a for a in serve_args if a != "--"]
    params = dict(p.split("=", 1) for p in args.params.split("&") if p)
    body = args.photo.read_bytes()
    expected, reference = single_call(args.model, args.photo, params, args.single_runs)
    from stylert.tools.bench import machine, write_json

    report = {"schema": "stylert.serve_load/1", "machine": machine(), "model": args.model, "photo": str(args.photo),
              "params": params, "serve_args": serve_args, "single_call": reference, "runs": []}
    print(f"single call (reference, in process): p50 {reference['p50_ms']:.0f} ms, "
          f"{reference['requests_per_s']:.2f} req/s", flush=True)
    url_query = "&".join(f"{k}={v}" for k, v in params.items())
    with Service([args.model], *serve_args) as service:
        report["cold_start_s"] = service.cold_start_s
        status, _, models = request(service.url + "/models")
        report["models"] = json.loads(models)
        route = next(iter(report["models"]))
        url = f"{service.url}/{route}" + (f"?{url_query}" if url_query else "")
        sid, peak = service.proc.pid, [0.0]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.wait(0.5):
                peak[0] = max(peak[0], session_rss_mb(sid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        request(url, body)  # warm-up
        for c in (int(x) for x in args.concurrency.split(",")):
            row = load(url, body, expected, args.requests, c, args.time_limit, args.kill_replica_after)
            row["vs_c1"] = row["requests_per_s"] / report["runs"][0]["requests_per_s"] if report["runs"] else 1.0
            report["runs"].append(row)
            fault = row.get("fault", {})
            print(f"C={c:>3}: {row['ok']}/{row['requests']} ok, {row['errors']} errors, {row['corrupted']} corrupted, "
                  f"p50 {row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms, {row['requests_per_s']:.2f} req/s "
                  f"({row['vs_c1']:.2f}x C=1), batches {row['batch_sizes']}"
                  + (f"; killed replica {fault.get('pid')}: {fault['failed']} failed, recovered {fault['recovered']}"
                     if fault else ""), flush=True)
        sampling.set()
        report["peak_rss_mb"] = peak[0]
        report["healthz_after"] = request(service.url + "/healthz")[0]
    report["exit_status"] = service.proc.returncode
    report["leftover_processes"] = service.leftover
    print(f"cold start {report['cold_start_s']:.1f} s, peak RSS {report['peak_rss_mb']:.0f} MB (service processes), "
          f"/healthz after the runs {report['healthz_after']}, exit {report['exit_status']}, "
          f"{len(service.leftover)} process(es) left behind")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, report, indent=1)
    bad = any(r["corrupted"] for r in report["runs"]) or service.leftover or report["exit_status"] != 0
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
