"""The deploy manifests (``deploy/``) stay true to the code: they parse, their Serve configs are
valid Serve configs whose import path is a Serve application builder in this tree, their deployment
options are the code's, and every ``ESP_*`` variable they set is a setting with a valid value.
The Rays they start get the environment ESP's local Ray gets. Nothing here starts Ray or connects
to Redis."""

from __future__ import annotations

import importlib
import inspect
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from runtime.dev.local_ray import RAY_PROCESS_ENVIRONMENT
from runtime.errors import EspError
from runtime.settings import EspSettings

ROOT = Path(__file__).resolve().parents[2]
SERVE_CONFIG = ROOT / "deploy" / "serve" / "esp-serve.yaml"
RAYSERVICE = ROOT / "deploy" / "kuberay" / "rayservice.yaml"
CLUSTER = ROOT / "cluster.yaml"


def serve_configs() -> dict[str, dict[str, Any]]:
    """Both Serve configs: the config file and the RayService's ``serveConfigV2``."""
    rayservice = yaml.safe_load(RAYSERVICE.read_text())
    return {
        "esp-serve.yaml": yaml.safe_load(SERVE_CONFIG.read_text()),
        "serveConfigV2": yaml.safe_load(rayservice["spec"]["serveConfigV2"]),
    }


def containers() -> list[dict[str, Any]]:
    cluster = yaml.safe_load(RAYSERVICE.read_text())["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [c for group in groups for c in group["template"]["spec"]["containers"]]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith("ESP_"):
            monkeypatch.delenv(name)


def test_the_manifests_are_yaml():
    for path in (SERVE_CONFIG, RAYSERVICE, ROOT / "cluster.yaml"):
        assert list(yaml.safe_load_all(path.read_text()))
    rayservice = yaml.safe_load(RAYSERVICE.read_text())
    assert (rayservice["apiVersion"], rayservice["kind"]) == ("ray.io/v1", "RayService")


@pytest.mark.parametrize("name", ["esp-serve.yaml", "serveConfigV2"])
def test_serve_config_is_valid_and_names_the_real_builder(name):
    from ray.serve.schema import ServeDeploySchema

    from serve import app as api

    config = ServeDeploySchema.model_validate(serve_configs()[name])
    (application,) = config.applications
    assert (application.name, application.route_prefix) == (api.APP_NAME, "/")
    module, attribute = application.import_path.split(":")
    builder = getattr(importlib.import_module(module), attribute)
    assert inspect.isfunction(builder) and len(inspect.signature(builder).parameters) == 1  # Serve's builder contract
    (deployment,) = application.deployments
    assert deployment.name == api.EspApi.name
    assert deployment.max_ongoing_requests == api.EspApi.max_ongoing_requests == api.MAX_ONGOING
    assert deployment.ray_actor_options.num_cpus == api.EspApi.ray_actor_options["num_cpus"]


@pytest.mark.parametrize("name", ["esp-serve.yaml", "serveConfigV2"])
def test_serve_configs_run_esp_s_job_environment(name):
    from actors.worker_setup import runtime_env

    (application,) = serve_configs()[name]["applications"]
    for key, value in runtime_env().items():
        assert application["runtime_env"].get(key) == value, key


def test_every_esp_variable_is_a_setting_with_a_valid_value():
    fields = {f"ESP_{name.upper()}" for name in EspSettings.model_fields}
    application = serve_configs()["esp-serve.yaml"]["applications"][0]
    given = [dict(application["runtime_env"]["env_vars"])]
    for container in containers():
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert {"ESP_REDIS_URL", "ESP_SECRET"} <= env.keys()  # from the Secret, not in the file
        assert all(
            "secretKeyRef" in e["valueFrom"] for e in container["env"] if e["name"] in ("ESP_REDIS_URL", "ESP_SECRET")
        )
        given.append({name: value for name, value in env.items() if name.startswith("ESP_")})  # Ray's are apart
    for env in given:
        assert set(env) <= fields, set(env) - fields
        values = {k[4:].lower(): v for k, v in env.items() if v is not None}
        settings = EspSettings(**values)
        assert settings.actors > 0  # the builder refuses 0
        assert settings.checkpoint_uri and "://" in settings.checkpoint_uri  # shared storage, not a node's disk


def test_head_and_workers_share_one_environment_and_the_api_replica_count():
    envs = [c["env"] for c in containers()]
    assert all(env == envs[0] for env in envs)
    replicas = next(e["value"] for e in envs[0] if e["name"] == "ESP_API_REPLICAS")
    deployment = serve_configs()["serveConfigV2"]["applications"][0]["deployments"][0]
    assert int(replicas) == deployment["num_replicas"]


def test_every_ray_the_manifests_start_has_esp_s_ray_process_environment():
    """The variables ESP's local Ray gets (``RAY_PROCESS_ENVIRONMENT``) are copied by hand into
    ``cluster.yaml``'s start commands and the RayService's containers: a copy may not drift."""
    for container in containers():
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert {name: env.get(name) for name in RAY_PROCESS_ENVIRONMENT} == RAY_PROCESS_ENVIRONMENT, container["name"]
    cluster = yaml.safe_load(CLUSTER.read_text())
    for command in cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"]:
        if "ray start" in command:
            exported = command.split("export", 1)[1].split(";", 1)[0].split()
            assert dict(item.split("=", 1) for item in exported) == RAY_PROCESS_ENVIRONMENT, command


def test_the_builder_refuses_what_a_cluster_cannot_run_before_touching_ray():
    from actors.deploy import build_from_env

    with pytest.raises(EspError) as no_redis:
        build_from_env({"actors": 8})
    assert no_redis.value.reason == "redis_unset"
    with pytest.raises(EspError) as no_count:
        build_from_env({"redis_url": "redis://redis.invalid:6379/0"})
    assert no_count.value.reason == "actors_unset"


class Recorded:
    """The coordinator's record in Redis: only the assignment hash field is read."""

    def __init__(self, assignment: list[list[int]] | None) -> None:
        self.assignment = assignment

    def hget(self, key: str, name: str) -> bytes | None:
        return json.dumps(self.assignment).encode() if self.assignment is not None and name == "assignment" else None


class Running:
    def __init__(self, count: int) -> None:
        self.count = count

    def find(self, role: str, count: int) -> list[str]:
        return [f"esp-{role}-{i}" for i in range(min(count, self.count))]


def test_a_rebuild_may_not_change_the_actor_count_while_actors_run():
    from actors.deploy import check_actor_count

    four = EspSettings(actors=4, partitions=64)
    two_running = Recorded([[0], [1]])
    with pytest.raises(EspError) as changed:
        check_actor_count(Running(2), two_running, four)
    assert changed.value.reason == "actors_changed"
    check_actor_count(Running(0), two_running, four)  # a fresh Ray cluster: nothing runs, any count starts
    check_actor_count(Running(4), Recorded([[0], [1], [2], [3]]), four)  # the same count: the running ones are kept
    check_actor_count(Running(0), Recorded(None), four)  # first start
