"""Credentials in URLs never reach a terminal or a log."""

from __future__ import annotations

import pytest

from runtime.security.redact import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:secret@host:6379/0", "redis://:***@host:6379/0"),
        ("rediss://user:p@ss:w0rd@redis.internal:6380/1", "rediss://user:***@redis.internal:6380/1"),
        ("https://ghp_token@github.com/x", "https://***@github.com/x"),
        ("redis://host:6379/0?password=secret&db=1", "redis://host:6379/0?password=***&db=1"),
        ("redis://127.0.0.1:6390/0", "redis://127.0.0.1:6390/0"),
        ("http://127.0.0.1:8000/v1/events?source=a", "http://127.0.0.1:8000/v1/events?source=a"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url(url: str, shown: str):
    assert redact_url(url) == shown


def test_every_url_in_a_message_is_redacted():
    message = "cannot reach redis://:s3cret@a:1/0 nor redis://u:t0p@b:2/0 (user@example.com is not a URL)"
    shown = redact_url(message)
    assert "s3cret" not in shown and "t0p" not in shown
    assert "redis://:***@a:1/0" in shown and "redis://u:***@b:2/0" in shown and "user@example.com" in shown
