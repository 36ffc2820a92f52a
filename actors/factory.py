"""Every ESP actor is made here, one way: a plain class with its name, namespace, restart policy,
lifetime and CPU reservation set in :meth:`RayActors.create`.

:class:`RayActors` is also the only place the coordinator calls Ray from, so the coordination
logic around it (``actors/coordinator.py``) is plain Python, tested with a fake of this class
(``tests/unit/test_coordinator.py``). Ray Serve does the same with ``ActorReplicaWrapper``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import ray

from runtime.process_gc import tune_gc
from runtime.process_logging import configure_process, fields
from runtime.settings import EspSettings
from serve.metrics import count_restart

logger = logging.getLogger(__name__)

NAMESPACE = "esp"  # every ESP actor, and every driver that looks them up
MAX_RESTARTS = -1  # a crashed actor always comes back; its constructor recovers its state
MAX_TASK_RETRIES = 3  # a call that met a crash is sent again to the restarted actor
MAX_CONCURRENCY = 4  # status and stop calls are answered while the work loop runs
SPREAD_ROLES = frozenset({"partition"})  # over the nodes ("SPREAD"); one node: the same as the default


@dataclass(frozen=True, slots=True)
class ActorSpec:
    """One actor to make: its class, role and index (which give its name) and CPU reservation."""

    cls: type
    role: str  # "partition", "dispatcher", "policy"
    index: int
    num_cpus: float

    @property
    def name(self) -> str:
        return actor_name(self.role, self.index)


def actor_name(role: str, index: int) -> str:
    """The Ray name of an actor: ``esp-<role>-<index>``, e.g. ``esp-partition-0``."""
    return f"esp-{role}-{index}"


def actor_started(role: str, index: int, settings: dict[str, Any]) -> EspSettings:
    """What every ESP actor's constructor does first: rebuild its settings from the wire, send the
    process's logs as ``esp-<role>-<index>`` (``runtime/process_logging.py``), pace its garbage
    collector (``runtime/process_gc.py``), and count and log a
    restart by Ray (``esp_actor_restarts_total``)."""
    esp = EspSettings(**settings)
    name = actor_name(role, index)
    configure_process(name, esp)
    tune_gc()
    restarted = ray.get_runtime_context().was_current_actor_reconstructed
    count_restart(role, name)
    logger.log(
        logging.WARNING if restarted else logging.INFO,
        "%s %s (pid %d)",
        name,
        "restarted by Ray after a crash" if restarted else "started",
        os.getpid(),
        extra=fields(actor=name, role=role, restarted=restarted),
    )
    return esp


class RayActors:
    """The Ray calls that make, find, wait for and stop ESP's actors."""

    def create(self, spec: ActorSpec, *args: Any, detached: bool) -> Any:
        """A handle to the named actor, made with ``args`` unless it exists already. Detached
        actors outlive the process that made them (``esp up``); the others live as long as it."""
        remote = ray.remote(spec.cls).options(
            name=spec.name,
            namespace=NAMESPACE,
            lifetime="detached" if detached else None,
            max_restarts=MAX_RESTARTS,
            max_task_retries=MAX_TASK_RETRIES,
            num_cpus=spec.num_cpus,
            max_concurrency=MAX_CONCURRENCY,
            get_if_exists=True,
            **({"scheduling_strategy": "SPREAD"} if spec.role in SPREAD_ROLES else {}),
        )
        return remote.remote(*args)

    def find(self, name: str) -> Any | None:
        """The named actor's handle, or None when there is none."""
        try:
            return ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            return None

    def wait_ready(self, handles: list[Any], *, timeout_s: float | None = None) -> None:
        """Until every actor has run its constructor (its status answers); raises TimeoutError
        after ``timeout_s`` (e.g. no node has the CPUs to place one)."""
        try:
            ray.get([h.status.remote() for h in handles], timeout=timeout_s)
        except ray.exceptions.GetTimeoutError as exc:
            raise TimeoutError(f"actors not ready within {timeout_s}s") from exc

    def stop(self, handles: list[Any], *, timeout_s: float) -> None:
        """Ask each actor to stop (checkpoint, end its loop), then kill it for good. Best effort:
        an actor may be gone already."""
        try:
            ray.get([h.stop.remote() for h in handles], timeout=timeout_s)
        except Exception:  # gone, or too slow: it is killed below either way
            pass
        for handle in handles:
            ray.kill(handle, no_restart=True)

    def call(self, handle: Any, method: str, *args: Any, timeout_s: float = 120.0) -> Any:
        """Call ``method`` of the actor and wait for its answer."""
        return ray.get(getattr(handle, method).remote(*args), timeout=timeout_s)

    def statuses(self, handles: list[Any], *, timeout_s: float) -> list[dict[str, Any] | None]:
        """Each actor's ``status()``, or None for one that does not answer in time (restarting)."""
        refs = [h.status.remote() for h in handles]
        if not refs:
            return []
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        done = set(ready)
        found: list[dict[str, Any] | None] = []
        for ref in refs:
            try:
                found.append(ray.get(ref) if ref in done else None)
            except ray.exceptions.RayError:
                found.append(None)
        return found

    def nodes(self) -> list[dict[str, Any]]:
        """The cluster's nodes as the GCS knows them (dead ones included): id, address, alive, CPUs."""
        return [
            {
                "node_id": n["NodeID"],
                "address": f"{n['NodeManagerAddress']}:{n['NodeManagerPort']}",
                "alive": bool(n["Alive"]),
                "cpus": n.get("Resources", {}).get("CPU"),
                "head": "node:__internal_head__" in n.get("Resources", {}),
            }
            for n in ray.nodes()
        ]

    def cpus(self) -> int:
        """The whole CPUs the cluster has free now."""
        return int(ray.available_resources().get("CPU", 1) // 1)

    def total_cpus(self) -> int:
        """The whole CPUs of the cluster's live nodes, free or not."""
        return int(ray.cluster_resources().get("CPU", 1) // 1)
