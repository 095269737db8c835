"""Starting or joining Ray for `stylert serve` and `stylert batch` (the one place both do it)."""
from __future__ import annotations

import socket

import ray

from ..errors import StylertError


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
