"""Endpoint secrets are sealed at rest and open only with the same server secret."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.security.sealing import PREFIX, Sealer, SealError

SUBSCRIPTION = {
    "kind": "subscription",
    "name": "hooks",
    "webhook": {
        "url": "https://example.com/hook",
        "secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        "headers": {"Authorization": "Bearer receiver-credential"},
    },
}


@given(st.text(max_size=300))
def test_sealing_round_trips_any_text(value: str) -> None:
    sealer = Sealer("server-secret-0123456789")
    sealed = sealer.seal(value)
    assert sealed.startswith(PREFIX)
    assert len(value) < 8 or value not in sealed
    assert sealer.unseal(sealed) == value
    assert sealer.seal(sealed) == sealed  # sealing twice changes nothing


def test_records_keep_their_shape_with_secrets_sealed() -> None:
    sealer = Sealer("server-secret-0123456789")
    sealed = sealer.seal_record("subscription", SUBSCRIPTION)
    text = str(sealed)
    assert "whsec_MfKQ" not in text and "receiver-credential" not in text
    assert sealed["webhook"]["url"] == SUBSCRIPTION["webhook"]["url"]
    assert list(sealed["webhook"]["headers"]) == ["Authorization"]
    assert sealer.unseal_record("subscription", sealed) == SUBSCRIPTION
    assert sealer.seal_record("rule", {"kind": "rule", "webhook": {"secrets": ["x"]}})["webhook"]["secrets"] == ["x"]


def test_another_server_secret_cannot_open_them() -> None:
    sealed = Sealer("server-secret-0123456789").seal("whsec_x")
    with pytest.raises(SealError):
        Sealer("another-secret-0123456789").unseal(sealed)


def test_plain_values_from_before_sealing_still_read() -> None:
    assert Sealer("server-secret-0123456789").unseal_record("subscription", SUBSCRIPTION) == SUBSCRIPTION
