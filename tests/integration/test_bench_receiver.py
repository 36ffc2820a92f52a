"""The benchmark's local webhook receiver (``runtime.dev.receiver``): in its own process, it
answers 200 to what is signed with its secret and 401 to anything else, and counts."""

from __future__ import annotations

import httpx

from runtime.dev.receiver import Receiver
from runtime.subscriptions.webhooks import generate_secret, headers


def test_the_receiver_verifies_signatures_and_counts_events_and_ids():
    secret = generate_secret()
    with Receiver([secret]) as receiver:
        one, batch = b'{"specversion":"1.0","id":"a"}', b'[{"specversion":"1.0"},{"specversion":"1.0"}]'
        assert (
            httpx.post(f"{receiver.url}/x", content=one, headers=headers([secret], "msg_1", 1, one)).status_code == 200
        )
        assert (
            httpx.post(f"{receiver.url}/x", content=one, headers=headers([secret], "msg_1", 1, one)).status_code == 200
        )
        sent = headers([secret], "msg_2", 1, batch)
        assert httpx.post(f"{receiver.url}/x", content=batch, headers=sent).status_code == 200
        forged = headers([generate_secret()], "msg_3", 1, one)
        assert httpx.post(f"{receiver.url}/x", content=one, headers=forged).status_code == 401
        assert httpx.post(f"{receiver.url}/x", content=b"{}", headers=sent).status_code == 401  # another body
        stats = receiver.stats()
    assert {k: stats[k] for k in ("requests", "events", "valid", "invalid", "unique_ids")} == {
        "requests": 5,
        "events": 6,
        "valid": 3,
        "invalid": 2,
        "unique_ids": 3,
    }
