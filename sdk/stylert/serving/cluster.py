"""Starting or joining Ray for `stylert serve` and `stylert batch`, and the precision their workers run in (the
one place both do it)."""
from __future__ import annotations

import socket
from pathlib import Path

import ray

from ..errors import StylertError
from ..runtime.model import cpu_flags, open_model
from ..runtime.precision import native_bf16, pinned_precision


def check_address(address: str | None) -> None:
    """A host:port that nothing answers on is one line now: Ray itself would retry an unreachable head for minutes.
    Commands call it before they write anything."""
    host, _, port = (address or "").rpartition(":")
    if host and port.isdigit() and "://" not in address:
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as exc:
            raise StylertError(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc})") from None


def init_ray(address: str | None, **options) -> None:
    """Join the cluster at `address`, or start a local Ray ("local": never a running one by accident);
    a cluster that cannot be joined is one line naming the address, not a trace."""
    check_address(address)
    try:
        ray.init(address=address or "local", include_dashboard=False, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        if not address:
            raise StylertError(f"cannot start a local Ray ({exc})") from None
        raise StylertError(f"--address {address}: cannot join the Ray cluster ({exc}); is it running with this "
                           "Ray version, and does this machine have its token (RAY_AUTH_MODE=token, "
                           "`ray get-auth-token`)?") from None


def settle_precision(path: str | Path, providers: str | None, precision: str | None) -> str | None:
    """The precision every replica or actor of a model is to run in, decided once here so that they all run the same
    one: where precision auto would measure (OpenVINO chosen automatically on a CPU with native bf16), the model is
    opened once in this process (its verdict cached for the next start) and its choice is pinned; otherwise the
    precision asked for (argument or STYLERT_PRECISION), or None for the backend's default. Style packs (several
    graphs, each with its own verdict), engines and int8 graphs keep what was asked: an int8 graph's verdict (int8
    with a float part, or its source in its place) is no precision to pin, and its workers read it from the cache
    this open wrote."""
    pinned = pinned_precision(precision)
    if (pinned not in (None, "auto") or (providers and pinned is None) or Path(path).is_dir()
            or Path(path).suffix == ".engine" or not native_bf16(cpu_flags())):
        return pinned
    model = open_model(path, providers, precision=pinned)
    try:
        if not model.backend.startswith("openvino") or model.metadata.get("stylert.precision") == "int8":
            return pinned
        return model.precision
    finally:
        model.close()

