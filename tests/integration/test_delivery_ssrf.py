"""Webhook URLs that point into ESP's own network are refused when saved and again when called
(real redis-server, a real HTTP receiver on loopback standing for the internal service, the
dispatcher in-process)."""

from __future__ import annotations

import socket
import threading

import pytest

from runtime import keys
from runtime.config.store import ConfigStore
from runtime.subscriptions.deadletters import list_dead
from runtime.subscriptions.models import Subscription
from tests.integration.test_delivery import (
    dispatcher,
    pending,
    publish,
    wait_running,
    wait_settled,
    wait_until,
    webhook,
)
from tests.support.receiver import Receiver

STREAM = keys.subscription_stream("hooks")
PUBLIC = "93.184.216.34"  # a global address: what the attacker's name resolves to when ESP checks
REBINDING_HOST = "hooks.rebinding.test"


def external(name: str, url: str) -> dict:
    doc = webhook(name, url)
    doc["webhook"]["internal"] = False
    return doc


class Rebinding:
    """``REBINDING_HOST`` resolves to the public address for the first ``public_answers`` lookups,
    then to loopback (a DNS rebinding attacker with a zero TTL); other names resolve as usual.

    Installed on ``socket``: nothing is ever sent to the public address (no network in tests);
    a connection to it is refused at once, and recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, public_answers: int) -> None:
        self.public_answers = public_answers
        self.lookups = 0
        self.connects_to_public = 0
        self._lock = threading.Lock()
        real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

        def getaddrinfo(host, port, *args, **kwargs):
            name = host.decode() if isinstance(host, bytes) else host  # anyio passes IDNA-encoded bytes
            if name != REBINDING_HOST:
                return real_getaddrinfo(host, port, *args, **kwargs)
            with self._lock:
                self.lookups += 1
                public = self.lookups <= self.public_answers
            address = PUBLIC if public else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port or 80)))]

        def connect(sock, address):
            if isinstance(address, tuple) and address[0] == PUBLIC:
                with self._lock:
                    self.connects_to_public += 1
                raise ConnectionRefusedError(111, "refused by the test (no public network)")
            return real_connect(sock, address)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        monkeypatch.setattr(socket.socket, "connect", connect)


def test_a_stored_loopback_url_is_refused_at_call_time(redis_server, redis_client):
    """The document reached the store without the save-time check (``ConfigStore._store`` is
    what ``put`` calls after validating): the dispatcher still refuses to call it."""
    with Receiver() as receiver, dispatcher(redis_server) as d:
        doc = Subscription.model_validate(external("hooks", receiver.url), context={"stored": True})
        ConfigStore(redis_client)._store(doc)
        wait_running(d, "subscription/hooks")
        publish(redis_client, 2)
        dead = wait_until(lambda: (x := list_dead(redis_client, STREAM))["total"] == 2 and x, 10, "dead letters")
        wait_settled(redis_client, STREAM)
        assert receiver.seen() == []
        assert pending(redis_client, STREAM) == 0
    assert [(i["status"], i["error"], i["attempts"]) for i in dead["items"]] == [(None, "loopback_address", 1)] * 2
    attempts = [redis_client.lrange(keys.deliveries(f"esp/rule/r/o{i}"), 0, -1) for i in range(2)]
    assert all(len(a) == 1 and b'"outcome":"failed"' in a[0] for a in attempts)


def test_a_name_that_now_resolves_to_loopback_is_refused_at_call_time(redis_server, redis_client, monkeypatch):
    """Public when saved, loopback by the time events are delivered."""
    resolver = Rebinding(monkeypatch, public_answers=1)  # the save-time check only
    with Receiver() as receiver, dispatcher(redis_server) as d:
        ConfigStore(redis_client).put(external("hooks", f"http://{REBINDING_HOST}:{receiver.port}/hook"))
        assert resolver.lookups == 1  # accepted: it resolved to a public address
        wait_running(d, "subscription/hooks")
        publish(redis_client, 1)
        dead = wait_until(lambda: (x := list_dead(redis_client, STREAM))["total"] == 1 and x, 10, "dead letter")
        wait_settled(redis_client, STREAM)
        assert receiver.seen() == []
    assert (dead["items"][0]["status"], dead["items"][0]["error"]) == (None, "loopback_address")
    assert resolver.connects_to_public == 0  # refused before any connection


def test_a_name_rebinding_between_the_check_and_the_connect_is_not_called(redis_server, redis_client, monkeypatch):
    """The name answers public to the dispatcher's check, loopback to any later lookup: the call
    must go to the address that was checked, never to the internal service."""
    resolver = Rebinding(monkeypatch, public_answers=2)  # the save-time check and the dispatcher's check
    with Receiver() as receiver, dispatcher(redis_server) as d:
        doc = external("hooks", f"http://{REBINDING_HOST}:{receiver.port}/hook")
        doc["webhook"]["retry"] = ["50ms"]
        ConfigStore(redis_client).put(doc)
        wait_running(d, "subscription/hooks")
        publish(redis_client, 1)
        handled = lambda: receiver.seen() or list_dead(redis_client, STREAM)["total"]  # noqa: E731
        wait_until(handled, 10, "handled")
        wait_settled(redis_client, STREAM)
        reached = receiver.seen()
        dead = list_dead(redis_client, STREAM)["items"]
    assert reached == [], f"the internal service got {len(reached)} request(s) for {REBINDING_HOST}"
    assert resolver.connects_to_public == 2  # both attempts went to the checked address
    assert [(i["status"], i["attempts"]) for i in dead] == [(None, 2)]
    assert "ConnectError" in dead[0]["error"]
