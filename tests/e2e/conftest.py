"""A real local Ray for the session, and a whole ESP (embedded Redis, partition actors, the
Serve app on a free loopback port) per test module."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from ray import serve

from actors.platform import NAMESPACE, Platform
from actors.worker_setup import runtime_env
from runtime.dev.client import EspClient
from runtime.dev.redis_server import free_cluster_ports, free_port
from runtime.settings import EspSettings

SOURCE_KEY = "e2e-source-key-0123456789"
METRICS_PORT = free_port()


def init_session_ray() -> None:
    """The session's private local Ray (also what a test that ran its own cluster restores)."""
    ray.init(
        address="local",  # always a private cluster, even if another one runs on this machine
        num_cpus=2,
        include_dashboard=False,
        namespace=NAMESPACE,
        log_to_driver=False,
        _metrics_export_port=METRICS_PORT,
        runtime_env=runtime_env(),  # as the platform starts its own
    )


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    init_session_ray()
    yield
    ray.shutdown()


def make_platform(
    tmp: Path, *, proxy_location: str | None = None, redis_cluster: int = 0, **overrides: object
) -> Platform:
    """A whole ESP in ``tmp``; with ``redis_cluster`` N, on a local N-master Redis Cluster."""
    settings = EspSettings(
        state_dir=tmp,
        redis_port=free_cluster_ports(redis_cluster)[0] if redis_cluster else free_port(),
        http_port=free_port(),
        metrics_export_port=METRICS_PORT,
        **{"partitions": 16, "actors": 2, "checkpoint_interval_s": 1.0, "visibility_timeout_s": 2.0, **overrides},
    )
    platform = Platform(settings)
    platform.proxy_location = proxy_location  # "HeadOnly" on a multi-node cluster on one machine
    platform.start_redis(cluster=redis_cluster)
    try:
        platform.deploy(detached=False)
    except BaseException:
        with contextlib.suppress(Exception):  # the deploy's error is the one to see
            stop_platform(platform)  # the Redis it started too
        raise
    if platform.admin_token:  # every EspClient of the tests acts as this admin unless told otherwise
        os.environ["ESP_TOKEN"] = platform.admin_token
    return platform


def stop_platform(platform: Platform) -> None:
    try:
        platform.undeploy()
        serve.shutdown()
    finally:
        platform.actors = []
        platform.dispatchers = []
        if platform.redis_server:
            platform.redis_server.stop()
        if platform.redis_cluster:
            platform.redis_cluster.stop()


@pytest.fixture(scope="module")
def platform(
    ray_session: None, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Platform]:
    """The module's platform, with the settings in the module's ``PLATFORM_SETTINGS`` if any,
    on a local Redis Cluster of ``REDIS_CLUSTER`` masters if the module says so."""
    platform = make_platform(
        tmp_path_factory.mktemp("esp"),
        redis_cluster=getattr(request.module, "REDIS_CLUSTER", 0),
        **getattr(request.module, "PLATFORM_SETTINGS", {}),
    )
    with EspClient(platform.base_url) as admin:
        admin.put_config({"kind": "source", "name": "e2e", "api_key": SOURCE_KEY})
    yield platform
    errors = [ray.get(actor.status.remote())["errors"] for actor in platform.actors]
    stop_platform(platform)
    if any(errors):  # an actor that failed and recovered hides a bug from every other assertion
        pytest.fail(f"partition actors hit {errors} step failures during the module (see the Ray worker logs)")


@pytest.fixture
def client(platform: Platform) -> Iterator[EspClient]:
    with EspClient(platform.base_url, key=SOURCE_KEY) as c:
        yield c
