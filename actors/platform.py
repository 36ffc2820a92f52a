"""Starting and stopping a whole ESP: Redis (embedded or external), Ray (local or an existing
cluster), the partition actors and the Serve app. Used by ``esp up/down/demo`` and by tests."""

from __future__ import annotations

import ipaddress
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import ray
from pydantic import SecretStr
from ray import serve

from actors.coordinator import Coordinator
from actors.directory import RayPartitionDirectory
from actors.factory import NAMESPACE
from actors.worker_setup import runtime_env
from runtime.dev.local_ray import SYSTEM_CONFIG, head_start_options, lean_head, use_local_ray
from runtime.dev.redis_server import EmbeddedRedis, EmbeddedRedisCluster
from runtime.redis_client import connect
from runtime.security.private_files import private_dir, write_private
from runtime.security.tokens import TokenStore, bootstrap_admin
from runtime.settings import EspSettings
from serve import app as api

logger = logging.getLogger(__name__)


class Platform:
    """One ESP deployment as seen from the process that manages it."""

    def __init__(self, settings: EspSettings) -> None:
        self.settings = settings
        self.redis_server: EmbeddedRedis | None = None
        self.redis_cluster: EmbeddedRedisCluster | None = None  # 'esp up --redis-cluster N'
        self.actors: list[Any] = []  # non-detached actors live as long as their handles
        self.dispatchers: list[Any] = []
        self.policy: list[Any] = []  # the contact-policy stage
        self.gateway: Any = None  # the local message gateway when it runs in this process
        self.proxy_location: str | None = None  # Serve's default unless set ("HeadOnly": local multi-node)

    @property
    def state_file(self) -> Path:
        return self.settings.state_dir / "platform.json"

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.http_host}:{self.settings.http_port}"

    def start_redis(self, *, cluster: int = 0) -> None:
        """The embedded Redis (with a generated password) unless an external one is set, or
        with ``cluster`` N a local Redis Cluster of N masters on ports ``ESP_REDIS_PORT`` and up,
        which then is ESP's Redis URL; the first step of every local start, so it also closes
        the state directory (0700)."""
        private_dir(self.settings.state_dir)
        if cluster:
            ports = [self.settings.redis_port + i for i in range(cluster)]
            self.redis_cluster = EmbeddedRedisCluster(self.settings.state_dir / "redis-cluster", ports).start()
            self.settings = self.settings.model_copy(update={"redis_url": SecretStr(self.redis_cluster.url)})
        elif self.settings.redis_url is None:
            self.redis_server = EmbeddedRedis(self.settings.state_dir / "redis", self.settings.redis_port).start()
        connect(self.settings.effective_redis_url()).ping()

    @property
    def gateway_log(self) -> Path:
        return self.settings.state_dir / "gateway" / "messages.jsonl"

    def start_gateway(self, *, own_process: bool) -> int | None:
        """The built-in local message gateway that records what channels would have sent:
        in this process (demo, tests), or as its own process that outlives it (``esp up``;
        returns its pid)."""
        if not self.settings.gateway_port:
            return None
        if not own_process:
            from runtime.dev.gateway import LocalGateway

            self.gateway = LocalGateway(self.gateway_log, port=self.settings.gateway_port).start()
            return None
        self.gateway_log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "runtime.dev.gateway", "--path", str(self.gateway_log)]
        cmd += ["--port", str(self.settings.gateway_port)]
        with (self.gateway_log.parent / "gateway.log").open("ab") as out:
            process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        return process.pid

    def stop_gateway(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None

    def start_ray_head(self, num_cpus: int | None = None) -> str:
        """``ray start --head`` as its own process tree, so it outlives this command. Every port
        it opens is on loopback, and it uses Ray's token authentication with the token in the
        state directory (see ``runtime.dev.local_ray``; the CLI calls ``use_local_ray`` before
        importing Ray, so ``connect`` sends the same token). ``num_cpus``: the head's share when
        worker nodes join it (default ``settings.ray_num_cpus``)."""
        use_local_ray(private_dir(self.settings.state_dir))
        cmd = [
            str(Path(sys.executable).with_name("ray")),
            "start", "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={self.settings.ray_port}",
            f"--ray-client-server-port={self.settings.ray_client_server_port}",
            f"--num-cpus={num_cpus or self.settings.ray_num_cpus}",
            "--include-dashboard=false",
            "--dashboard-host=127.0.0.1",
            f"--metrics-export-port={self.settings.metrics_export_port}",
            "--disable-usage-stats",
            *head_start_options(self.settings.ray_object_store_mb),
        ]  # fmt: skip
        log = self.settings.state_dir / "ray-start.log"
        with log.open("ab") as out:  # not a pipe: Ray's daemons inherit it and never close it
            done = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"'ray start --head' failed (exit {done.returncode}); see {log}")
        return f"127.0.0.1:{self.settings.ray_port}"

    def start_ray_workers(self, address: str, count: int, num_cpus: int) -> list[dict[str, Any]]:
        """``count`` worker nodes joined to the local head at ``address``, on loopback, each with
        ``num_cpus`` CPUs and its own temp dir (``<state_dir>/ray-node-<i>``); they outlive this
        command. Returns, per node, its id, address and PIDs (``esp down`` stops those)."""
        from runtime.dev.local_ray import worker_node_command
        from runtime.dev.redis_server import free_port

        nodes = []
        for i in range(1, count + 1):
            temp_dir = private_dir(self.settings.state_dir / f"ray-node-{i}").resolve()
            cmd = worker_node_command(address, num_cpus=num_cpus, temp_dir=temp_dir, metrics_export_port=free_port())
            log, out = self.settings.state_dir / f"ray-node-{i}.log", temp_dir / "node.json"
            with log.open("ab") as err:  # not a pipe: Ray's daemons inherit it and never close it
                done = subprocess.run(
                    [*cmd, "--out", str(out)], stdin=subprocess.DEVNULL, stdout=err, stderr=err, check=False
                )
            if done.returncode != 0:
                raise RuntimeError(f"worker node {i} failed to start (exit {done.returncode}); see {log}")
            nodes.append(json.loads(out.read_text()))
        return nodes

    @staticmethod
    def connect(address: str) -> None:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, runtime_env=runtime_env())

    def init_ray_in_process(self) -> None:
        """A private local Ray that ends with this process (demo and tests). It listens on
        loopback only when ``runtime.dev.local_ray.use_local_ray`` ran before Ray was imported (the
        CLI does so); otherwise Ray binds the routable address, which is logged loudly."""
        with lean_head():  # sized for ESP: see runtime.dev.local_ray.head_start_options
            ray.init(
                address="local",  # a new private Ray, never a running (or stale) cluster found on the machine
                num_cpus=self.settings.ray_num_cpus,
                object_store_memory=self.settings.ray_object_store_mb * 1024 * 1024,
                include_dashboard=False,
                namespace=NAMESPACE,
                _metrics_export_port=self.settings.metrics_export_port,
                _system_config=SYSTEM_CONFIG,
                runtime_env=runtime_env(),
                log_to_driver=False,
                configure_logging=False,
            )
        node = ray.util.get_node_ip_address()
        if not ipaddress.ip_address(node).is_loopback:
            logger.warning("the local Ray listens on %s, not loopback: call use_local_ray() before importing Ray", node)

    @property
    def admin_token_file(self) -> Path:
        return self.settings.state_dir / "admin.token"

    @property
    def admin_token(self) -> str | None:
        """The bootstrap admin token (None when auth is off or its file was removed)."""
        try:
            return self.admin_token_file.read_text().strip() or None
        except OSError:
            return None

    def bootstrap_admin(self) -> str | None:
        """On first start, an admin token in ``<state_dir>/admin.token`` (0600); returns it when
        it was created now."""
        if not self.settings.auth:
            return None
        secret = self.settings.server_secret().encode()
        store = TokenStore(connect(self.settings.effective_redis_url()), secret)
        return bootstrap_admin(store, self.admin_token_file)

    def coordinator(self) -> Coordinator:
        """The coordinator of this deployment's actors (its records are in this Redis)."""
        return Coordinator(self.settings, connect(self.settings.effective_redis_url()))

    def deploy(self, *, detached: bool) -> None:
        self.bootstrap_admin()
        started = self.coordinator().start(detached=detached)
        self.actors, self.dispatchers, self.policy = started.partitions, started.dispatchers, started.policy
        http_options = {"host": self.settings.http_host, "port": self.settings.http_port}
        logging_config = api.serve_logging(self.settings)
        if self.proxy_location is None:
            serve.start(http_options=http_options, logging_config=logging_config)
        else:  # several nodes on one machine: one proxy, or they would all bind the same port
            serve.start(http_options=http_options, proxy_location=self.proxy_location, logging_config=logging_config)
        directory = RayPartitionDirectory(self.settings.to_wire())
        serve.run(api.build(self.settings, directory), name=api.APP_NAME, route_prefix="/", blocking=False)
        self.wait_ready()

    def scale_api(self, replicas: int) -> None:
        """Run ``replicas`` replicas of the HTTP API: the application is deployed again with
        only that changed, and Serve replaces its replicas one at a time while they serve."""
        self.settings = self.settings.model_copy(update={"api_replicas": replicas})
        directory = RayPartitionDirectory(self.settings.to_wire())
        serve.run(api.build(self.settings, directory), name=api.APP_NAME, route_prefix="/", blocking=False)
        self.wait_ready()

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"{self.base_url}/readyz", timeout=5)
                if response.status_code == 200:
                    return
                last = response.text
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.5)
        raise RuntimeError(f"ESP not ready after {timeout_s}s: {last}")

    def undeploy(self) -> None:
        try:
            serve.shutdown()
        except Exception:  # already gone
            logger.debug("serve shutdown failed", exc_info=True)
        self.coordinator().stop()

    def save_state(self, **fields: Any) -> None:
        """``platform.json``, mode 0600: it may name an external Redis URL with its password."""
        write_private(self.state_file, json.dumps(fields, indent=2))

    def load_state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
