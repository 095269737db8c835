"""`stylert serve`: the face calls as one Ray Serve application (install with `pip install 'stylert[serve]'`).

Two deployments. `FaceService` (one per model, `--replicas` each) opens the model, decodes request
bodies, and batches concurrent requests with Ray Serve's `@serve.batch`: their photos go through
`FaceModel.process_batch` together, so their faces share network runs, and each result is the one the
CLI writes for that photo alone. `Gateway` (the ingress, no CPU reserved) routes POST /retouch,
/restore, /stylize/<style>, /inpaint, /edit and GET /healthz, /models and the demo page, bounds the request
body before anything decodes it, and turns a bad request into a 4xx with the CLI's one-line message. /inpaint
and /edit take a multipart form (image, mask, and exemplar; sketch, semantic, color for /edit) or the image as
the body with ?region=. Ray Serve runs
the HTTP server, the queues and the replicas; only this module, batchjob.py and cluster.py import Ray.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import InputError, StylertError
from ..faces.imageio import LoadedImage, decode_image, encode_image, read_mask
from ..faces.pipeline import NoFaceError
from .cluster import init_ray, settle_precision
from ..calls.registry import CALLS, call_of, open_call, parse_controls

APP = "stylert"
FORMATS = {"png": ".png", "jpeg": ".jpg", "jpg": ".jpg", "webp": ".webp"}  # ?format= -> file type
MEDIA = {".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp"}
FROM_PILLOW = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}  # the request's format, answered in kind
log = logging.getLogger("ray.serve")


@dataclass
class Reply:
    """What a FaceService answers: an image, or an error (status >= 400, one-line message)."""
    status: int
    body: bytes = b""
    suffix: str = ".png"
    info: dict = field(default_factory=dict)  # faces, timings_ms, batch (requests in its network run), replica
    error: str = ""


@dataclass
class Job:
    loaded: LoadedImage
    value: object
    options: dict
    suffix: str
    timings: dict
    group: str = ""  # requests with the same group run as one process_batch


PARTS = {call.name: ("image", "mask", *(f.name for f in call.files))  # the files of a multipart request
         for call in CALLS.values() if call.masked}


def _failure(exc: BaseException) -> Reply:
    """A bad input is the client's (4xx, its one-line message); anything else is ours (500, logged)."""
    if isinstance(exc, StylertError):
        return Reply(422 if isinstance(exc, NoFaceError) else 400, error=str(exc))
    log.error("request failed", exc_info=exc)
    return Reply(500, error=f"internal error: {type(exc).__name__}: {exc}")


@serve.deployment
class FaceService:
    """One model's replicas: decode, batch across requests, run, encode."""

    def __init__(self, path: str, providers: str | None, threads: int | None, max_batch: int, batch_wait_ms: float,
                 precision: str | None = None):
        self.path = path
        self.model = open_call(path, providers, threads, precision)  # settled by the driver: one for every replica
        self.call = self.model.call
        self.max_batch = max_batch
        self.batch_wait_ms = batch_wait_ms
        self.replica = f"{os.getpid()}@{socket.gethostname()}"
        self.photo_seconds = 0.0  # the last batch's run time per photo
        self.busy_until = 0.0  # when the running batch should end (time.monotonic), 0 when idle
        self.infer.set_max_batch_size(max_batch)
        self.infer.set_batch_wait_timeout_s(batch_wait_ms / 1000)

    def describe(self) -> dict:
        meta = self.model.model.metadata
        info = {"call": self.call, "path": self.path, "resolution": self.model.resolution, "trained": self.model.trained,
                "backend": self.model.model.backend, "precision": self.model.model.precision,
                "precision_reason": self.model.model.precision_choice.reason, "batch_limit": self.model.batch_limit,
                "max_batch": self.max_batch, "batch_wait_ms": self.batch_wait_ms, "version": meta.get("stylert.version")}
        if self.call == "stylize":
            info["styles"] = self.model.styles
        if self.call in PARTS:
            from ..calls.inpaint import REGIONS

            info["method"], info["regions"] = self.model.method, list(REGIONS)
        return info

    async def __call__(self, body: bytes, params: dict, fmt: str | None, parts: dict | None = None) -> Reply:
        """One request: checked and decoded here, then batched with the requests around it. `parts`: the other
        files of a multipart request (inpaint's mask and exemplar)."""
        try:
            t = time.perf_counter()
            name = "image" if parts else "request body"
            loaded = await asyncio.to_thread(decode_image, body, name)
            value, options = parse_controls(self.call, params)
            group = json.dumps([value, sorted(options.items())])
            if self.call in PARTS:
                value, group = await asyncio.to_thread(self._masked_inputs, value, options, parts or {})
            decode_ms = (time.perf_counter() - t) * 1000
            self.model.check(value, **options)
            suffix = FORMATS[fmt] if fmt else FROM_PILLOW.get(loaded.format or "", ".png")
            if loaded.alpha is not None and suffix == ".jpg":
                raise InputError("the image has an alpha channel, which JPEG cannot hold: ask for ?format=png or webp")
        except Exception as exc:  # noqa: BLE001 - every failure becomes this request's reply
            return _failure(exc)
        # Ray Serve forms the next batch while one runs, and reads the wait when its first request comes:
        # make that wait last until the running batch should end, so the requests queued meanwhile go
        # together; with the replica idle, a batch waits --batch-wait-ms.
        remaining = self.busy_until - time.monotonic()
        self.infer.set_batch_wait_timeout_s(max(self.batch_wait_ms / 1000, remaining))
        return await self.infer(Job(loaded, value, options, suffix, {"decode": decode_ms}, group))

    def _masked_inputs(self, region, options: dict, parts: dict) -> tuple[object, str]:
        """The mask (a 'mask' file, or ?region=) and the other files of an /inpaint or /edit request (exemplar;
        sketch, semantic, color), and the group it batches in: the same controls and the same files."""
        if ("mask" in parts) == (region is not None):
            raise InputError(f"{self.call} needs one mask: a 'mask' file in a multipart form (with 'image'), or "
                             "?region=NAME with the image as the body")
        value = read_mask(parts["mask"], "mask").fill if "mask" in parts else region
        readers = {f.name: f for f in CALLS[self.call].files}
        files = {name: data for name, data in parts.items() if name != "mask"}
        for name, data in files.items():
            options[name] = readers[name].read(data)
        digest = hashlib.blake2b(b"".join(files[k] for k in sorted(files)), digest_size=16).hexdigest()
        return value, json.dumps([sorted((k, v) for k, v in options.items() if k not in files), digest])

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def infer(self, jobs: list[Job]) -> list[Reply]:
        start = time.monotonic()
        self.busy_until = start + self.photo_seconds * len(jobs)
        try:
            return await asyncio.to_thread(self._run, jobs)
        finally:
            self.photo_seconds, self.busy_until = (time.monotonic() - start) / len(jobs), 0.0

    def _run(self, jobs: list[Job]) -> list[Reply]:
        """Jobs with the same controls run as one process_batch; each photo is encoded as the CLI writes it."""
        replies: dict[int, Reply] = {}
        groups: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(job.group, []).append(i)
        for members in groups.values():
            first = jobs[members[0]]
            value = [jobs[i].value for i in members] if self.call in PARTS else first.value  # a mask per photo
            results: list
            try:
                results = self.model.process_batch([jobs[i].loaded.rgb for i in members], value, channels="rgb",
                                                   max_batch=min(self.max_batch, self.model.batch_limit),
                                                   **first.options)
            except Exception as exc:  # noqa: BLE001 - a failing batch answers each of its requests
                results = [exc] * len(members)
            for i, result in zip(members, results):
                replies[i] = self._encode(jobs[i], result, len(members))
        return [replies[i] for i in range(len(jobs))]

    def _encode(self, job: Job, result, batch: int) -> Reply:
        if isinstance(result, Exception):
            return _failure(result)
        loaded = job.loaded
        t = time.perf_counter()
        try:
            data = encode_image(result.image, job.suffix, loaded.alpha, loaded.grayscale, loaded.exif, loaded.icc,
                                name="result")
        except StylertError as exc:
            return _failure(exc)
        timings = {**job.timings, **result.timings_ms, "encode": (time.perf_counter() - t) * 1000}
        info = {**result.summary(), "batch": batch, "replica": self.replica, "warning": loaded.warning}
        info["timings_ms"] = {k: round(v, 2) for k, v in timings.items()}
        return Reply(200, data, job.suffix, info)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


DEMO = {"index.html": "text/html; charset=utf-8", "demo.js": "text/javascript; charset=utf-8",
        "demo.css": "text/css; charset=utf-8"}  # the demo page's files, shipped in serving/demo/


def _demo_file(name: str) -> Response:
    """The demo page (GET /) and its script and style (GET /demo/<file>); nothing else is read from disk."""
    if name not in DEMO:
        return _error(404, f"no demo file {name!r}")
    return Response((Path(__file__).parent / "demo" / name).read_bytes(), media_type=DEMO[name],
                    headers={"Cache-Control": "no-cache"})


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
class Gateway:
    """The HTTP ingress: routes, the body limit, and replies in the client's format."""

    def __init__(self, services: dict, max_body_mb: float):
        self.services = services  # route -> FaceService handle
        self.max_body = int(max_body_mb * 2 ** 20)
        self.max_body_mb = max_body_mb

    def _routes(self) -> list[str]:
        return ["GET / (the demo page)", "GET /healthz", "GET /models"] + [
            f"POST /{r}" + ("/<style>" if r == "stylize" else "") for r in self.services]

    async def __call__(self, request: Request) -> Response:
        parts = [p for p in request.url.path.split("/") if p]
        if request.method == "GET" and (parts == [] or (len(parts) == 2 and parts[0] == "demo")):
            return _demo_file(parts[1] if parts else "index.html")
        if parts in (["healthz"], ["models"]):
            if request.method != "GET":
                return _error(405, f"{request.method} /{parts[0]}: use GET")
            return await (self._health() if parts == ["healthz"] else self._models())
        route = parts[0] if parts else ""
        if route not in self.services or len(parts) > (2 if route == "stylize" else 1):
            return _error(404, f"no route {request.method} {request.url.path}; routes: {', '.join(self._routes())}")
        if request.method != "POST":
            return _error(405, f"{request.method} /{route}: send the image file as the body of a POST")
        if route == "stylize" and len(parts) < 2:
            return _error(404, "name the style: POST /stylize/<style> (GET /models lists them)")
        query = request.query_params
        repeated = sorted({k for k in query.keys() if len(query.getlist(k)) > 1})
        if repeated:
            return _error(400, f"parameter(s) {', '.join(repeated)} given more than once")
        params = dict(query)
        fmt = params.pop("format", None)
        if fmt is not None and fmt.lower() not in FORMATS:
            return _error(400, f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        if route == "stylize":
            if "style" in params:
                return _error(400, "the style is part of the path: POST /stylize/<style>")
            params["style"] = parts[1]
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        files = None
        if route in PARTS and request.headers.get("content-type", "").startswith("multipart/form-data"):
            files = await self._form(request, body, PARTS[route])
            if isinstance(files, Response):
                return files
            body = files.pop("image")
        try:
            reply: Reply = await self.services[route].remote(body, params, fmt and fmt.lower(), files)
        except Exception as exc:  # noqa: BLE001 - a replica died mid-request (Ray restarts it): retryable
            log.warning("%s request failed in its replica: %s", route, exc)
            return _error(503, f"the {route} replica serving this request failed ({type(exc).__name__}); "
                               "Ray Serve restarts it: retry")
        if reply.status >= 400:
            return _error(reply.status, reply.error)
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"image": base64.b64encode(reply.body).decode(), "format": reply.suffix[1:],
                                 **reply.info})
        headers = {"X-Stylert-Faces": json.dumps(reply.info["faces"], separators=(",", ":")),
                   "X-Stylert-Timings": json.dumps(reply.info["timings_ms"], separators=(",", ":")),
                   "X-Stylert-Batch": str(reply.info["batch"]), "X-Stylert-Replica": reply.info["replica"]}
        if reply.info["warning"]:  # about the image (several frames: the first was used), as the CLI's warning line
            headers["X-Stylert-Warning"] = reply.info["warning"]
        return Response(reply.body, media_type=MEDIA[reply.suffix], headers=headers)

    async def _body(self, request: Request) -> bytes | Response:
        """The body, refused (413) once it is known to pass the limit, never kept or decoded. The rest of
        a refused body is read and dropped (up to 4x the limit) before answering: a client still sending
        would otherwise see the connection reset instead of the 413."""
        length = request.headers.get("content-length")
        too_big = length is not None and length.isdigit() and int(length) > self.max_body
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            too_big = too_big or size > self.max_body
            if too_big and size > 4 * self.max_body:
                break
            if not too_big:
                chunks.append(chunk)
        if too_big:
            return _error(413, f"request body over the {self.max_body_mb:g} MB limit (stylert serve --max-body-mb)")
        return b"".join(chunks)

    async def _form(self, request: Request, body: bytes, names: tuple[str, ...]) -> dict | Response:
        """The files of a multipart form already read (within the body limit): image, mask, and the route's others."""
        from starlette.formparsers import MultiPartException, MultiPartParser

        async def stream():
            yield body

        try:
            form = await MultiPartParser(request.headers, stream()).parse()
        except (MultiPartException, ValueError, KeyError) as exc:
            return _error(400, f"malformed multipart form ({exc})")
        unknown = sorted(set(form.keys()) - set(names))
        if unknown:
            return _error(400, f"unknown form field(s) {', '.join(unknown)}; this route takes the files "
                               f"{', '.join(names)} (controls go in the query string)")
        if "image" not in form:
            return _error(400, "the multipart form has no 'image' file")
        files = {}
        for name in names:
            item = form.get(name)
            if item is not None:
                files[name] = await item.read() if hasattr(item, "read") else str(item).encode()
        return files

    async def _health(self) -> Response:
        status = {}
        for route, handle in self.services.items():
            try:
                await asyncio.wait_for(handle.describe.remote(), timeout=10)
                status[route] = "ok"
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                status[route] = f"unavailable: {type(exc).__name__}"
        ok = all(v == "ok" for v in status.values())
        return JSONResponse({"status": "ok" if ok else "degraded", "models": status}, status_code=200 if ok else 503)

    async def _models(self) -> Response:
        return JSONResponse({route: await handle.describe.remote() for route, handle in self.services.items()})


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    replicas: int = 1
    max_batch: int = 8
    batch_wait_ms: float = 10.0
    gpus_per_replica: float = 0.0
    cpus_per_replica: float = 1.0
    threads: int | None = None
    providers: str | None = None
    max_body_mb: float = 50.0
    address: str | None = None
    precision: str | None = None  # auto, f32, bf16; None: STYLERT_PRECISION, else the backend's default


def routes_for(models: list[str]) -> dict[str, str]:
    """route -> model path, from each model's metadata; two models for one call are refused."""
    routes: dict[str, str] = {}
    for path in models:
        call = call_of(path)
        if call in routes:
            raise InputError(f"{routes[call]} and {path} are both {call} models: serve one model per call")
        routes[call] = path
    return routes


def application(routes: dict[str, str], opts: ServeOptions):
    """The bound Serve application: one FaceService deployment per route behind the Gateway."""
    threads = opts.threads or max(1, (os.cpu_count() or 1) // max(1, opts.replicas))
    services = {}
    for route, path in routes.items():
        precision = settle_precision(path, opts.providers, opts.precision)  # one choice for every replica
        services[route] = FaceService.options(
            name=f"{route}-service", num_replicas=opts.replicas, max_ongoing_requests=2 * opts.max_batch,
            ray_actor_options={"num_cpus": opts.cpus_per_replica, "num_gpus": opts.gpus_per_replica},
        ).bind(str(os.path.abspath(path)), opts.providers, threads, opts.max_batch, opts.batch_wait_ms, precision)
    return Gateway.bind(services, opts.max_body_mb)


def check_options(opts: ServeOptions) -> None:
    for name in ("replicas", "max_batch"):
        if getattr(opts, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(opts, name)}")
    for name in ("batch_wait_ms", "gpus_per_replica", "cpus_per_replica", "max_body_mb"):
        if getattr(opts, name) < 0:
            raise InputError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(opts, name)}")
    if not 0 < opts.port < 65536:
        raise InputError(f"--port must be in 1..65535, got {opts.port}")


def run(models: list[str], opts: ServeOptions, say=print) -> int:
    """Start (or join, with opts.address) Ray, deploy, serve until Ctrl-C or SIGTERM, then shut down what
    was started here: a local Ray entirely; on a cluster, only this application."""
    check_options(opts)
    routes = routes_for(models)
    init_ray(opts.address)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops like Ctrl-C (after Ray's own handler)
    try:
        serve.start(http_options={"host": opts.host, "port": opts.port})
        serve.run(application(routes, opts), name=APP, route_prefix="/")
        say(f"stylert serve: {', '.join(f'/{r} <- {p}' for r, p in routes.items())} on http://{opts.host}:{opts.port} "
            f"({opts.replicas} replica(s) each; Ctrl-C to stop)")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        say("stylert serve: shutting down")
    finally:
        if opts.address:
            serve.delete(APP)
        else:
            serve.shutdown()
        ray.shutdown()
    return 0


__all__ = ["APP", "FaceService", "Gateway", "ServeOptions", "application", "run", "routes_for"]
