"""`stylert batch`: a photo library through one face call as a Ray Data job (`pip install 'stylert[serve]'`).

The files become a dataset of (input, output) rows; `map_batches` runs them on a pool of actors, each
holding the model once and handing every batch to `FaceModel.process_files` (read, process the photos'
faces together, write atomically), so the job writes exactly the files `stylert retouch IN -o OUT`
writes. Rows come back in input order with the file's error, if any; the CLI prints them as they
arrive. Ray Data does the scheduling, the pool and the retries; on a cluster the input and output
folders must be on storage every node sees.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import ray

from ..errors import StylertError
from ..faces.pipeline import file_report
from .cluster import init_ray, settle_precision
from ..calls.registry import open_call


@dataclass
class JobOptions:
    concurrency: int = 1  # actors, each with the model loaded once
    batch: int = 4  # files per process_files call
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    threads: int | None = None
    providers: str | None = None
    address: str | None = None
    precision: str | None = None  # auto, f32, bf16; None: STYLERT_PRECISION, else the backend's default


class FileWorker:
    """One actor of the pool: the model, opened once, over batches of (input, output) rows."""

    def __init__(self, path: str, providers: str | None, threads: int | None, value, options: dict,
                 precision: str | None = None):
        self.model = open_call(path, providers, threads, precision)  # settled by the driver: one for every actor
        self.value, self.options = value, options
        try:
            self.model.check(value, **options)
            self.refused = ""
        except StylertError as exc:  # reported once by the driver, which stops the job
            self.refused = str(exc)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        pairs = [(Path(s), Path(d)) for s, d in zip(batch["input"], batch["output"])]
        if self.refused:
            return {"report": ["{}"] * len(pairs), "refused": [self.refused] * len(pairs)}
        done = self.model.process_files(pairs, self.value, **self.options)  # an input is never written over
        return {"report": [json.dumps(file_report(*item)) for item in done], "refused": [""] * len(pairs)}


def run(model: str, pairs: list[tuple[Path, Path]], value, options: dict, opts: JobOptions) -> Iterator[dict]:
    """Start (or join) Ray and yield one report per file (pipeline.file_report), in input order. A control
    value the model refuses ends the job with a StylertError. Ray is shut down when the reports are
    consumed or the consumer stops early."""
    precision = settle_precision(model, opts.providers, opts.precision)  # one choice for every actor
    init_ray(opts.address, logging_level=logging.WARNING)
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # lines in input order, as the CLI prints them
        context.enable_progress_bars = False  # the CLI draws one bar over files
        # Workers get absolute paths (their working directory is not the caller's on a cluster); reports
        # name the files as the caller did, like the CLI's lines.
        given = {str(s.absolute()): str(s) for s, _ in pairs} | {str(d.absolute()): str(d) for _, d in pairs}
        rows = [{"input": str(s.absolute()), "output": str(d.absolute())} for s, d in pairs]
        ds = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // opts.batch)))
        worker_args = (str(Path(model).resolve()), opts.providers, opts.threads, value, options, precision)
        reports = ds.map_batches(FileWorker, fn_constructor_args=worker_args, batch_size=opts.batch,
                                 compute=ray.data.ActorPoolStrategy(size=opts.concurrency),
                                 num_cpus=opts.cpus_per_worker, num_gpus=opts.gpus_per_worker or None,
                                 batch_format="numpy")
        for row in reports.iter_rows():
            if row["refused"]:
                raise StylertError(row["refused"])
            report = json.loads(row["report"])
            src = report["input"]
            if report["error"] and report["error"].startswith(src):
                report["error"] = given[src] + report["error"][len(src):]
            report["input"] = given[src]
            report["output"] = report["output"] and given[report["output"]]
            yield report
    finally:
        ray.shutdown()


def pending(pairs: list[tuple[Path, Path]], overwrite: bool) -> tuple[list[tuple[Path, Path]], int]:
    """The pairs still to do (an output that exists is done, unless overwrite) and how many were skipped.
    Outputs are written atomically, so an existing file is a whole result of an earlier run; an output
    that is its own input is not a result, and stays to be refused by name as the CLI does."""
    if overwrite:
        return pairs, 0
    todo = [(s, d) for s, d in pairs if not d.exists() or d.resolve() == s.resolve()]
    return todo, len(pairs) - len(todo)

