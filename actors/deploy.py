"""The Serve application builder for declarative deploys: ``serve deploy`` / ``serve run`` with
``deploy/serve/esp-serve.yaml``, and KubeRay's ``RayService`` (``deploy/kuberay/rayservice.yaml``).
Its import path is ``actors.deploy:app``.

It does what ``esp up --address`` does on a running cluster (``actors.platform.Platform.deploy``),
from the ``ESP_*`` environment of the process that builds the application (Serve's build task on
the cluster), with the same functions: the bootstrap admin token, the partition, dispatcher and
policy actors (detached; the coordinator's ``get_if_exists`` makes a rebuild find the running
ones), then the HTTP API deployment of ``serve.app.build``. Serve itself binds the HTTP proxy
(``http_options`` of the config file) and checks health, so this neither starts Serve nor waits
for ``/readyz``.

It lives in ``actors/`` rather than ``serve/`` because it starts actors: the HTTP layer must not
import them (the layer contract in pyproject.toml).
"""

from __future__ import annotations

import logging
from typing import Any

import ray

from actors.coordinator import Coordinator
from actors.directory import RayPartitionDirectory
from actors.platform import Platform
from runtime.errors import EspError
from runtime.log.partitioning import recorded_assignment
from runtime.process_logging import configure_process
from runtime.redis_client import connect
from runtime.settings import EspSettings
from serve import app as api

logger = logging.getLogger(__name__)


def build_from_env(args: dict[str, Any] | None = None) -> Any:
    """The ESP application from ``EspSettings`` read from the environment; ``args`` (the Serve
    config's ``args:``, setting names in lower case, e.g. ``{"actors": 8}``) override it."""
    settings = EspSettings(**(args or {}))
    configure_process("esp-deploy", settings)
    if settings.redis_url is None:  # the embedded Redis is esp up's, on one machine
        raise EspError("a declarative deploy needs an external Redis: set ESP_REDIS_URL", reason="redis_unset")
    if settings.checkpoint_uri is None:
        logger.warning(
            "ESP_CHECKPOINT_URI is unset: checkpoints go to each node's own disk (%s)", settings.checkpoint_location
        )
    if settings.actors == 0:  # Serve rebuilds on every code or config update: the count must not drift
        raise EspError(
            "a declarative deploy needs a fixed number of partition actors: set ESP_ACTORS (0 means one "
            "per free CPU, which changes between builds as the actors take CPUs)",
            reason="actors_unset",
        )
    platform = Platform(settings)
    if platform.bootstrap_admin():
        logger.warning(
            "bootstrap admin token written to %s on node %s (mode 0600)",
            platform.admin_token_file.resolve(),
            ray.util.get_node_ip_address(),
        )
    client = connect(settings.effective_redis_url())
    coordinator = Coordinator(settings, client)
    check_actor_count(coordinator, client, settings)
    coordinator.start(detached=True)
    return api.build(settings, RayPartitionDirectory(settings.to_wire()))


def check_actor_count(coordinator: Coordinator, client: Any, settings: EspSettings) -> None:
    """Refuse a rebuild that changes the number of partition actors while they run: the running
    ones would be found and keep their partition sets, and the new assignment would give some
    partitions a second owner. (A fresh Ray cluster has none running, so any count starts there.)"""
    recorded = recorded_assignment(client)
    wanted = min(settings.actors, settings.partitions)
    if recorded and len(recorded) != wanted and coordinator.find("partition", len(recorded)):
        raise EspError(
            f"{len(recorded)} partition actors are running and the settings ask for {wanted}; changing the "
            "count needs a restart of the deployment (docs/operations/cluster.md)",
            reason="actors_changed",
        )


app = build_from_env  # a Serve application builder: Serve calls it with the config's ``args``
