"""``esp up --redis-cluster 3``: the real command starts a local 3-master Redis Cluster on
ESP_REDIS_PORT and the next two ports, runs ESP on it, and events posted over HTTP come out of
a rule once each. What it started is stopped by pid (``esp down`` would run ``ray stop``, which
stops every Ray on the machine, the test session's too)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import redis

from runtime.dev.client import EspClient
from runtime.dev.redis_server import free_cluster_ports, free_port
from tests.e2e.helpers import event, every_event_rule
from tests.e2e.test_exposure import esp_up_environment
from tests.support.sockets import descendants, kill_all, subreaper

KEY = "cluster-source-key-0123456789"


def test_esp_up_on_a_local_redis_cluster(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    redis_ports = free_cluster_ports(3)
    ports = {
        "HTTP_PORT": free_port(),
        "REDIS_PORT": redis_ports[0],
        "GATEWAY_PORT": 0,
        "METRICS_EXPORT_PORT": free_port(),
    }
    esp = str(Path(sys.executable).with_name("esp"))
    env = esp_up_environment(state_dir, ports)
    refused = subprocess.run([esp, "up", "--redis-cluster", "2"], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "at least 3 masters" in refused.stderr
    with subreaper():
        before = descendants(os.getpid())
        try:
            with (tmp_path / "out").open("w") as out, (tmp_path / "err").open("w") as err:  # daemons keep pipes open
                up = subprocess.run([esp, "up", "--redis-cluster", "3"], env=env, stdout=out, stderr=err, timeout=150)
            output = (tmp_path / "out").read_text()
            assert up.returncode == 0, output[-2000:] + (tmp_path / "err").read_text()[-3000:]
            assert f"a Redis Cluster on ports {', '.join(map(str, redis_ports))}" in output
            password = (state_dir / "redis-cluster" / "password").read_text().strip()
            assert password not in output
            nodes = redis.Redis(port=redis_ports[0], password=password).cluster("nodes")
            assert len([n for n in nodes.values() if "master" in n["flags"]]) == 3

            base_url = f"http://127.0.0.1:{ports['HTTP_PORT']}"
            token = (state_dir / "admin.token").read_text().strip()
            with EspClient(base_url, token=token) as admin:
                admin.put_config({"kind": "source", "name": "app", "api_key": KEY})
                admin.put_config(every_event_rule("each", "app.tick"))
                admin.put_config({"kind": "subscription", "name": "out", "topics": ["business.each"]})
            events = [event(i, "app.tick", customer=f"c{i % 50}") for i in range(300)]
            with EspClient(base_url, key=KEY) as sender:
                assert sender.send(events, batch_size=100).accepted == 300
                assert sender.send(events, batch_size=100).duplicates == 300  # a retry changes nothing
            with EspClient(base_url, token=token) as reader:
                got = [e["data"]["events"][0]["id"] for e in reader.drain("out", idle_s=5)]
            assert sorted(got) == sorted(e["id"] for e in events)
            status = subprocess.run(
                [esp, "status", "--json", "--url", base_url, "--state-dir", str(state_dir)],
                env={**env, "ESP_TOKEN": token},
                capture_output=True,
                text=True,
                timeout=60,
            )
            answer = json.loads(status.stdout)
            assert answer["reachable"] and len(answer["partitions"]) == 4, status.stdout[-2000:] + status.stderr[-2000:]
        finally:
            kill_all(descendants(os.getpid(), skip=before))
