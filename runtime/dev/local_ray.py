"""How ESP runs a Ray of its own on this machine (``esp up`` without ``--address``, ``esp demo``,
``esp bench``): every port on loopback, and for the head ``esp up`` starts, a token kept in
the state directory. Pure (no Ray import): the environment must be set before Ray is imported,
because Ray reads it once."""

from __future__ import annotations

import os
from pathlib import Path

from runtime.security.private_files import secret_file

RAY_TOKEN_FILE = "ray.token"


def loopback_environment() -> dict[str, str]:
    """Ray binds its GCS, raylet, agents, client server and metrics export to the node address,
    and turns an explicit ``--node-ip-address=127.0.0.1`` into the machine's routable address.
    With clusters disabled (Ray's single-machine mode, the default on macOS and Windows) the node
    address is loopback, so nothing Ray opens is reachable from another host."""
    return {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def head_environment(state_dir: Path) -> dict[str, str]:
    """Loopback, plus Ray's token authentication with the token in ``<state_dir>/ray.token``
    (0600): the head checks it, and every process of ours that connects sends it."""
    token_path = (state_dir / RAY_TOKEN_FILE).resolve()
    return {**loopback_environment(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path)}


def use_local_ray(state_dir: Path | None = None) -> None:
    """Set this process up for a local Ray: loopback only; with ``state_dir``, the token of the
    head started there (created if missing). Explicit settings in the environment win."""
    environment = head_environment(state_dir) if state_dir is not None else loopback_environment()
    for name, value in environment.items():
        os.environ.setdefault(name, value)
    if state_dir is not None:
        secret_file(Path(os.environ["RAY_AUTH_TOKEN_PATH"]))
