"""runtime.subscriptions.webhooks: Standard Webhooks signing, retry policy and the SSRF guard.

Signatures are checked by a verifier written here from the specification's text, not by
calling sign(): a bug shared by signer and verifier would otherwise go unnoticed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

from runtime.subscriptions.webhooks import (
    CONTENT_TYPE_CLOUDEVENTS_BATCH,
    CONTENT_TYPE_JSON,
    DEFAULT_SCHEDULE_MS,
    URL_REASONS,
    Outcome,
    RetryPolicy,
    Signer,
    address_reason,
    check_address,
    check_url,
    classify,
    generate_secret,
    headers,
    parse_retry_after_ms,
    secret_problem,
    sign,
    valid_secret,
)

# ---------------------------------------------------------------------------------------------
# An independent verifier, following https://www.standardwebhooks.com/ ("Verifying signatures")
# ---------------------------------------------------------------------------------------------


def spec_verify(secret: str, sent: dict[str, str], body: bytes) -> bool:
    """Accept when any ``v1`` signature in the header is HMAC-SHA256 of id.timestamp.body."""
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret[len("whsec_") :])
    content = sent["webhook-id"].encode() + b"." + sent["webhook-timestamp"].encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    for entry in sent["webhook-signature"].split(" "):
        version, _, signature = entry.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return True
    return False


# The specification's published test vector (the same one its reference libraries test).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()
NEW = "whsec_" + base64.b64encode(b"n" * 32).decode()
BODY = b'{"type":"offer.triggered","data":{"customer":"c1"}}'


def test_reproduces_the_specification_test_vector():
    assert sign([VECTOR_SECRET], VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_the_independent_verifier_accepts_the_test_vector():
    sent = {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TIMESTAMP), "webhook-signature": VECTOR_SIGNATURE}
    assert spec_verify(VECTOR_SECRET, sent, VECTOR_BODY)


def test_the_reference_library_reproduces_the_vector_and_our_signatures():
    """standardwebhooks (the specification's own Python library) signs what ``sign`` signs."""
    when = datetime.fromtimestamp(VECTOR_TIMESTAMP, tz=timezone.utc)
    assert Webhook(VECTOR_SECRET).sign(VECTOR_ID, when, VECTOR_BODY.decode()) == VECTOR_SIGNATURE
    ours = sign([OLD, NEW], "msg_lib", VECTOR_TIMESTAMP, BODY).split(" ")
    assert ours == [Webhook(secret).sign("msg_lib", when, BODY.decode()) for secret in (OLD, NEW)]


@pytest.mark.parametrize("receiver_knows", [OLD, NEW])
def test_a_receiver_on_the_reference_library_verifies_either_rotated_secret(receiver_knows):
    sent = headers([OLD, NEW], "msg_lib", int(time.time()), BODY)
    Webhook(receiver_knows).verify(BODY, sent, json_parse=False)  # raises when no signature matches
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, sent, json_parse=False)


def test_headers_carry_id_timestamp_signature_and_content_type():
    sent = headers([NEW], "msg_1", 1_700_000_000, BODY)
    assert sent == {
        "webhook-id": "msg_1",
        "webhook-timestamp": "1700000000",
        "webhook-signature": sign([NEW], "msg_1", 1_700_000_000, BODY),
        "content-type": CONTENT_TYPE_JSON,
    }
    assert spec_verify(NEW, sent, BODY)


def test_batches_use_the_cloudevents_batch_content_type():
    sent = headers([NEW], "msg_1", 1, BODY, content_type=CONTENT_TYPE_CLOUDEVENTS_BATCH)
    assert sent["content-type"] == "application/cloudevents-batch+json"


def test_one_signature_per_secret_in_order():
    value = sign([OLD, NEW], "msg_1", 1, BODY)
    assert value == f"{sign([OLD], 'msg_1', 1, BODY)} {sign([NEW], 'msg_1', 1, BODY)}"
    assert all(entry.startswith("v1,") for entry in value.split(" "))


@pytest.mark.parametrize("receiver_knows", [OLD, NEW])
def test_rotation_a_receiver_knowing_either_secret_verifies(receiver_knows):
    sent = headers([OLD, NEW], "msg_rot", 1_700_000_000, BODY)
    assert spec_verify(receiver_knows, sent, BODY)


def test_a_receiver_knowing_neither_secret_rejects():
    sent = headers([OLD, NEW], "msg_rot", 1_700_000_000, BODY)
    assert not spec_verify(generate_secret(), sent, BODY)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda sent, body: (sent, body + b" "), id="body"),
        pytest.param(lambda sent, body: (sent, body.replace(b"c1", b"c2")), id="body-value"),
        pytest.param(lambda sent, body: ({**sent, "webhook-timestamp": "1700000001"}, body), id="timestamp"),
        pytest.param(lambda sent, body: ({**sent, "webhook-id": "msg_2"}, body), id="id"),
    ],
)
def test_tampering_breaks_every_signature(tamper):
    sent = headers([OLD, NEW], "msg_1", 1_700_000_000, BODY)
    forged, forged_body = tamper(sent, BODY)
    assert not spec_verify(OLD, forged, forged_body)
    assert not spec_verify(NEW, forged, forged_body)


@given(
    keys=st.lists(st.binary(min_size=24, max_size=64), min_size=1, max_size=3),
    msg_id=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="."), min_size=1),
    timestamp_s=st.integers(min_value=0, max_value=2**40),
    body=st.binary(max_size=512),
)
def test_sign_then_verify_round_trips(keys, msg_id, timestamp_s, body):
    secrets = ["whsec_" + base64.b64encode(key).decode() for key in keys]
    sent = headers(secrets, msg_id, timestamp_s, body)
    assert all(spec_verify(secret, sent, body) for secret in secrets)
    assert not spec_verify(generate_secret(), sent, body)


@given(
    keys=st.lists(st.binary(min_size=24, max_size=64), min_size=0, max_size=3),
    msg_id=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="."), min_size=1),
    timestamp_s=st.integers(min_value=0, max_value=2**40),
    body=st.binary(max_size=512),
)
def test_the_dispatchers_signer_sends_what_headers_sends(keys, msg_id, timestamp_s, body):
    """The dispatcher decodes its endpoint's secrets once (``Signer``); its headers are those of
    ``headers()`` (without a secret: the same minus the signature)."""
    secrets = ["whsec_" + base64.b64encode(key).decode() for key in keys]
    sent = Signer(secrets).headers(msg_id, timestamp_s, body, content_type=CONTENT_TYPE_CLOUDEVENTS_BATCH)
    if secrets:
        assert sent == headers(secrets, msg_id, timestamp_s, body, content_type=CONTENT_TYPE_CLOUDEVENTS_BATCH)
    else:
        assert sent == {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp_s),
            "content-type": CONTENT_TYPE_CLOUDEVENTS_BATCH,
        }


def test_the_signer_refuses_what_sign_refuses():
    with pytest.raises(ValueError, match="webhook secret 0 is invalid"):
        Signer(["whsec_c2hvcnQ="])
    with pytest.raises(ValueError, match="webhook id"):
        Signer([NEW]).headers("msg.1", 1, BODY)


@pytest.mark.parametrize("msg_id", ["", "msg.1", "msg 1", "msg\r\nx-evil: 1", "msg\t1", "méssage", "x" * 257])
def test_ids_that_would_make_the_signed_content_ambiguous_are_refused(msg_id):
    with pytest.raises(ValueError, match="webhook id"):
        sign([NEW], msg_id, 1, BODY)


@pytest.mark.parametrize("timestamp_s", [-1, 1.5, True, "1"])
def test_timestamps_are_whole_non_negative_seconds(timestamp_s):
    with pytest.raises(ValueError, match="timestamp"):
        sign([NEW], "msg_1", timestamp_s, BODY)


def test_signing_needs_a_secret():
    with pytest.raises(ValueError, match="empty list of secrets"):
        sign([], "msg_1", 1, BODY)


def test_an_invalid_secret_is_named_by_position_and_not_quoted():
    bad = "whsec_c2hvcnQ="  # "short"
    with pytest.raises(ValueError, match="secret 1 is invalid: it decodes to 5 bytes") as info:
        sign([NEW, bad], "msg_1", 1, BODY)
    assert "c2hvcnQ" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------


def test_generated_secrets_are_valid_32_byte_and_distinct():
    first, second = generate_secret(), generate_secret()
    assert valid_secret(first) and valid_secret(second)
    assert first != second
    assert len(base64.b64decode(first[len("whsec_") :])) == 32


@pytest.mark.parametrize(
    ("secret", "ok"),
    [
        (VECTOR_SECRET, True),  # 24 bytes, the minimum
        ("whsec_" + base64.b64encode(b"k" * 64).decode(), True),
        ("whsec_" + base64.b64encode(b"k" * 23).decode(), False),
        ("whsec_" + base64.b64encode(b"k" * 65).decode(), False),
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", False),  # no prefix
        ("WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", False),
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!", False),  # not base64
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", False),  # bad padding
        ("whsec_MfKQ9r8GKYqrTwjUPD8I LPZIo2LaLaSw", False),
        ("whsec_", False),
        ("", False),
    ],
)
def test_valid_secret(secret, ok):
    assert valid_secret(secret) is ok
    assert (secret_problem(secret) is None) is ok


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("abc", "does not start with 'whsec_'"),
        ("whsec_!!!!", "not valid base64"),
        ("whsec_c2hvcnQ=", "decodes to 5 bytes"),
    ],
)
def test_secret_problems_say_what_is_expected(secret, problem):
    message = secret_problem(secret)
    assert problem in message
    assert "24 to 64 random bytes" in message


# ---------------------------------------------------------------------------------------------
# classify
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "outcome"),
    [
        (200, None, Outcome.DELIVERED),
        (201, None, Outcome.DELIVERED),
        (204, None, Outcome.DELIVERED),
        (299, None, Outcome.DELIVERED),
        (410, None, Outcome.GONE),
        (500, None, Outcome.RETRY),
        (502, None, Outcome.RETRY),
        (503, None, Outcome.RETRY),
        (504, None, Outcome.RETRY),
        (599, None, Outcome.RETRY),
        (408, None, Outcome.RETRY),
        (429, None, Outcome.RETRY),
        (None, "timeout", Outcome.RETRY),
        (None, "connection refused", Outcome.RETRY),
        (None, None, Outcome.RETRY),
        (None, "unresolvable_host", Outcome.RETRY),  # DNS hiccups pass
        (None, "private_address", Outcome.FAILED),  # rebinding caught at call time
        (None, "loopback_address", Outcome.FAILED),
        (400, None, Outcome.FAILED),
        (401, None, Outcome.FAILED),
        (403, None, Outcome.FAILED),
        (404, None, Outcome.FAILED),
        (413, None, Outcome.FAILED),
        (422, None, Outcome.FAILED),
        (499, None, Outcome.FAILED),
        (301, None, Outcome.RETRY),  # redirects are not followed
        (307, None, Outcome.RETRY),
        (100, None, Outcome.RETRY),
    ],
)
def test_classify(status, error, outcome):
    assert classify(status, error) is outcome


def test_outcomes_are_strings_for_logs_and_metrics():
    assert [o.value for o in Outcome] == ["delivered", "retry", "gone", "failed"]
    assert Outcome.GONE == "gone"


# ---------------------------------------------------------------------------------------------
# RetryPolicy.next_delay_ms
# ---------------------------------------------------------------------------------------------

NOW_S = 1_700_000_000.0
MIDDLE = 0.5  # rand() == 0.5 means no jitter


def fixed(value: float):
    return lambda: value


def clock():
    return NOW_S


def test_default_schedule_is_5s_30s_2m_10m_1h_5h_10h():
    assert DEFAULT_SCHEDULE_MS == (5_000, 30_000, 120_000, 600_000, 3_600_000, 18_000_000, 36_000_000)
    assert RetryPolicy().max_attempts == 8


def test_follows_the_schedule_then_stops():
    policy = RetryPolicy()
    delays = [policy.next_delay_ms(attempt, None, fixed(MIDDLE)) for attempt in range(1, 10)]
    assert delays == [*DEFAULT_SCHEDULE_MS, None, None]


def test_a_custom_schedule():
    policy = RetryPolicy(schedule_ms=(1_000, 2_000), jitter=0.0)
    assert [policy.next_delay_ms(a, None, fixed(0.9)) for a in (1, 2, 3)] == [1_000, 2_000, None]


def test_an_empty_schedule_means_a_single_attempt():
    policy = RetryPolicy(schedule_ms=())
    assert policy.max_attempts == 1
    assert policy.next_delay_ms(1, None, fixed(MIDDLE)) is None


def test_jitter_bounds():
    policy = RetryPolicy(schedule_ms=(10_000,), jitter=0.2)
    assert policy.next_delay_ms(1, None, fixed(0.0)) == 8_000
    assert policy.next_delay_ms(1, None, fixed(0.999999)) == 12_000
    assert policy.next_delay_ms(1, None, fixed(0.25)) == 9_000


@given(r=st.floats(min_value=0.0, max_value=1.0, exclude_max=True), attempt=st.integers(1, 7))
def test_jitter_stays_within_the_fraction(r, attempt):
    base = DEFAULT_SCHEDULE_MS[attempt - 1]
    delay = RetryPolicy().next_delay_ms(attempt, None, fixed(r))
    assert base * 0.8 - 1 <= delay <= base * 1.2 + 1


def test_retry_after_seconds_lengthens_the_wait():
    policy = RetryPolicy(jitter=0.0)
    assert policy.next_delay_ms(1, "120", fixed(MIDDLE), clock=clock) == 120_000


def test_retry_after_never_shortens_the_schedule():
    policy = RetryPolicy(jitter=0.0)
    assert policy.next_delay_ms(4, "1", fixed(MIDDLE), clock=clock) == 600_000
    assert policy.next_delay_ms(1, "0", fixed(MIDDLE), clock=clock) == 5_000


def test_retry_after_http_date_is_measured_from_the_clock():
    policy = RetryPolicy(jitter=0.0)
    # NOW_S is Tue, 14 Nov 2023 22:13:20 GMT; the receiver asks for 22:23:20, ten minutes on.
    assert policy.next_delay_ms(1, "Tue, 14 Nov 2023 22:23:20 GMT", fixed(MIDDLE), clock=clock) == 600_000


def test_retry_after_in_the_past_or_garbage_leaves_the_schedule():
    policy = RetryPolicy(jitter=0.0)
    assert policy.next_delay_ms(2, "Tue, 14 Nov 2023 20:00:00 GMT", fixed(MIDDLE), clock=clock) == 30_000
    assert policy.next_delay_ms(2, "soon", fixed(MIDDLE), clock=clock) == 30_000
    assert policy.next_delay_ms(2, "-5", fixed(MIDDLE), clock=clock) == 30_000
    assert policy.next_delay_ms(2, "", fixed(MIDDLE), clock=clock) == 30_000


def test_retry_after_is_capped():
    policy = RetryPolicy(jitter=0.0, max_retry_after_ms=900_000)
    assert policy.next_delay_ms(1, "86400", fixed(MIDDLE), clock=clock) == 900_000
    assert policy.next_delay_ms(1, "Wed, 15 Nov 2023 22:13:20 GMT", fixed(MIDDLE), clock=clock) == 900_000


def test_the_cap_never_shortens_the_schedule():
    policy = RetryPolicy(jitter=0.0, max_retry_after_ms=1_000)
    assert policy.next_delay_ms(6, "86400", fixed(MIDDLE), clock=clock) == 18_000_000


def test_retry_after_does_not_extend_an_exhausted_schedule():
    assert RetryPolicy().next_delay_ms(8, "60", fixed(MIDDLE), clock=clock) is None


def test_the_clock_is_read_only_for_an_http_date():
    def no_clock() -> float:
        raise AssertionError("clock read")

    policy = RetryPolicy(jitter=0.0)
    assert policy.next_delay_ms(1, None, fixed(MIDDLE), clock=no_clock) == 5_000


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        ("0", 0),
        ("30", 30_000),
        (" 30 ", 30_000),
        ("Tue, 14 Nov 2023 22:13:50 GMT", 30_000),
        ("Tuesday, 14-Nov-23 22:13:50 GMT", 30_000),  # RFC 850, still valid to receive
        ("Tue Nov 14 22:13:50 2023", 30_000),  # asctime, no zone: GMT
        ("Tue, 14 Nov 2023 22:13:19 GMT", 0),
        ("1.5", None),
        ("later", None),
        ("", None),
    ],
)
def test_parse_retry_after_ms(value, ms):
    assert parse_retry_after_ms(value, NOW_S) == ms


@given(st.text(max_size=64))
def test_parse_retry_after_never_raises(value):
    ms = parse_retry_after_ms(value, NOW_S)
    assert ms is None or ms >= 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schedule_ms": (1_000, 0)}, "positive whole milliseconds"),
        ({"schedule_ms": (1.5,)}, "positive whole milliseconds"),
        ({"jitter": 1.0}, r"\[0, 1\)"),
        ({"jitter": -0.1}, r"\[0, 1\)"),
        ({"max_retry_after_ms": -1}, "must not be negative"),
    ],
)
def test_policy_refuses_nonsense(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)


def test_policy_takes_a_list_schedule_and_stays_hashable():
    policy = RetryPolicy(schedule_ms=[1_000, 2_000])
    assert policy.schedule_ms == (1_000, 2_000)
    assert hash(policy) == hash(RetryPolicy(schedule_ms=(1_000, 2_000)))


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempts_count_from_one(attempt):
    with pytest.raises(ValueError, match="from 1"):
        RetryPolicy().next_delay_ms(attempt, None, fixed(MIDDLE))


@pytest.mark.parametrize("r", [1.0, -0.1])
def test_rand_outside_the_unit_interval_is_a_bug(r):
    with pytest.raises(ValueError, match="rand"):
        RetryPolicy().next_delay_ms(1, None, fixed(r))


# ---------------------------------------------------------------------------------------------
# check_url
# ---------------------------------------------------------------------------------------------

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"
ZONE = {
    "hooks.example.com": [PUBLIC_V4, PUBLIC_V6],
    "v6only.example.com": [PUBLIC_V6],
    "rebind.example.com": [PUBLIC_V4, "127.0.0.1"],  # one bad address is enough to refuse
    "intranet.example.com": ["10.1.2.3"],
    "cgnat.example.com": ["100.64.12.1"],
    "metadata.example.com": ["169.254.169.254"],
    "mapped.example.com": ["::ffff:10.0.0.1"],
    "ula.example.com": ["fd12:3456::1"],
    "zone.example.com": ["fe80::1%eth0"],
    "empty.example.com": [],
    "garbage.example.com": ["not-an-ip"],
}


def fake_resolve(host: str, port: int) -> list[str]:
    """DNS from a table; an unknown name fails like getaddrinfo does."""
    assert port in (80, 443, 8443)
    if host not in ZONE:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return ZONE[host]


def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"resolved {host!r}; IP literals and refused URLs must not reach DNS")


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/esp",
        "http://hooks.example.com/esp?x=1",
        "https://hooks.example.com:8443/esp",
        "https://HOOKS.example.com./esp",  # case and a trailing dot are the same name
        "https://v6only.example.com/",
        f"https://{PUBLIC_V4}/hook",
        f"https://[{PUBLIC_V6}]/hook",
        "https://8.8.8.8/",
        "https://[::ffff:8.8.8.8]/",  # mapped, but public
        "https://1572395042/",  # 93.184.216.34 as one number: odd but public
    ],
)
def test_public_urls_pass(url):
    assert check_url(url, internal=False, resolve=fake_resolve) is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        # scheme, host, credentials, port
        ("ftp://hooks.example.com/", "scheme_not_allowed"),
        ("file:///etc/passwd", "scheme_not_allowed"),
        ("gopher://hooks.example.com:70/", "scheme_not_allowed"),
        ("hooks.example.com/esp", "scheme_not_allowed"),
        ("//hooks.example.com/esp", "scheme_not_allowed"),
        ("https:///esp", "missing_host"),
        ("https://:443/esp", "missing_host"),
        ("https://user:pass@hooks.example.com/", "userinfo_not_allowed"),
        ("https://hooks.example.com@127.0.0.1/", "userinfo_not_allowed"),
        ("https://@hooks.example.com/", "userinfo_not_allowed"),
        ("https://hooks.example.com:0/", "invalid_port"),
        ("https://hooks.example.com:65536/", "invalid_port"),
        ("https://hooks.example.com:http/", "invalid_port"),
        ("https://hooks.example.com\\@127.0.0.1/", "invalid_url"),
        ("https://hooks.example.com /", "invalid_url"),
        ("https://hooks.example.com/\r\nHost: x", "invalid_url"),
        ("https://[::1/", "invalid_url"),
        # names
        ("https://localhost/", "loopback_address"),
        ("https://LOCALHOST:8443/", "loopback_address"),
        ("https://localhost./", "loopback_address"),
        ("https://api.localhost/", "loopback_address"),
        ("https://nowhere.example.com/", "unresolvable_host"),
        ("https://empty.example.com/", "unresolvable_host"),
        ("https://garbage.example.com/", "unresolvable_host"),
        ("https://rebind.example.com/", "loopback_address"),
        ("https://intranet.example.com/", "private_address"),
        ("https://cgnat.example.com/", "private_address"),
        ("https://metadata.example.com/latest/meta-data/", "link_local_address"),
        ("https://mapped.example.com/", "private_address"),
        ("https://ula.example.com/", "private_address"),
        ("https://zone.example.com/", "link_local_address"),
        # IPv4 literals
        ("http://127.0.0.1/", "loopback_address"),
        ("http://127.255.255.254:8443/", "loopback_address"),
        ("http://10.0.0.1/", "private_address"),
        ("http://172.16.0.1/", "private_address"),
        ("http://172.31.255.255/", "private_address"),
        ("http://192.168.1.1/", "private_address"),
        ("http://100.64.0.1/", "private_address"),
        ("http://100.127.255.254/", "private_address"),
        ("http://169.254.169.254/", "link_local_address"),
        ("http://0.0.0.0/", "unspecified_address"),
        ("http://224.0.0.1/", "multicast_address"),
        ("http://239.255.255.250/", "multicast_address"),
        ("http://240.0.0.1/", "reserved_address"),
        ("http://255.255.255.255/", "reserved_address"),
        ("http://192.0.2.1/", "reserved_address"),  # documentation range
        ("http://198.18.0.1/", "reserved_address"),  # benchmarking range
        ("http://0.1.2.3/", "reserved_address"),  # "this network"
        # IPv4 in forms inet_aton (and so getaddrinfo) reads without DNS
        ("http://2130706433/", "loopback_address"),
        ("http://0x7f000001/", "loopback_address"),
        ("http://0x7F.0.0.1/", "loopback_address"),
        ("http://0177.0.0.1/", "loopback_address"),
        ("http://0177.1/", "loopback_address"),
        ("http://127.1/", "loopback_address"),
        ("http://127.0.1/", "loopback_address"),
        ("http://012.0.0.1/", "private_address"),
        ("http://167772161/", "private_address"),
        ("http://0/", "unspecified_address"),
        ("http://08.0.0.1/", "invalid_host"),
        ("http://256.0.0.1/", "invalid_host"),
        ("http://1.2.3.4.5/", "invalid_host"),
        ("http://4294967296/", "invalid_host"),
        # IPv6 literals
        ("http://[::1]/", "loopback_address"),
        ("http://[::]/", "unspecified_address"),
        ("http://[fe80::1]/", "link_local_address"),
        ("http://[fe80::1%25eth0]/", "link_local_address"),
        ("http://[fc00::1]/", "private_address"),
        ("http://[fd00:ec2::254]/", "private_address"),
        ("http://[ff02::1]/", "multicast_address"),
        ("http://[2001:db8::1]/", "reserved_address"),
        ("http://[::ffff:127.0.0.1]/", "loopback_address"),
        ("http://[::ffff:7f00:1]/", "loopback_address"),
        ("http://[::ffff:10.0.0.1]/", "private_address"),
        ("http://[::ffff:169.254.169.254]/", "link_local_address"),
        ("http://[::ffff:0.0.0.0]/", "unspecified_address"),
        ("http://[64:ff9b::127.0.0.1]/", "loopback_address"),  # NAT64
        ("http://[2002:a00:1::]/", "private_address"),  # 6to4 wrapping 10.0.0.1
        ("http://[::127.0.0.1]/", "reserved_address"),  # deprecated IPv4-compatible form
    ],
)
def test_refused_urls(url, reason):
    assert reason in URL_REASONS
    assert check_url(url, internal=False, resolve=fake_resolve) == reason


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/", "http://2130706433/", "http://[::1]:8080/", "http://localhost:9000/", "http://10.0.0.1/"],
)
def test_literals_never_reach_dns(url):
    assert check_url(url, internal=False, resolve=no_dns) is not None


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:9000/hook",
        "http://127.0.0.1/",
        "http://[::1]/",
        "http://10.0.0.1/",
        "http://intranet.example.com/",
        "http://metadata.example.com/",
        "http://esp-sink.svc.cluster.local/",  # internal endpoints are not resolved here at all
    ],
)
def test_internal_endpoints_may_be_private(url):
    assert check_url(url, internal=True, resolve=no_dns) is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://localhost/", "scheme_not_allowed"),
        ("http://user:pw@localhost/", "userinfo_not_allowed"),
        ("http:///x", "missing_host"),
        ("http://localhost:0/", "invalid_port"),
    ],
)
def test_internal_endpoints_still_need_a_sound_url(url, reason):
    assert check_url(url, internal=True, resolve=no_dns) == reason


def test_resolver_errors_of_any_kind_mean_unresolvable():
    def idna_failure(host: str, port: int) -> list[str]:
        raise UnicodeError("label too long")

    assert check_url("https://hooks.example.com/", internal=False, resolve=idna_failure) == "unresolvable_host"


def test_the_resolver_gets_the_effective_port():
    asked: list[tuple[str, int]] = []

    def recording(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return [PUBLIC_V4]

    for url in ("http://a.example.com/", "https://b.example.com/", "https://c.example.com:8443/"):
        assert check_url(url, internal=False, resolve=recording) is None
    assert asked == [("a.example.com", 80), ("b.example.com", 443), ("c.example.com", 8443)]


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        (PUBLIC_V4, None),
        (PUBLIC_V6, None),
        ("127.0.0.1", "loopback_address"),
        ("::ffff:192.168.0.1", "private_address"),
        ("fe80::1%eth0", "link_local_address"),
        ("not-an-ip", "invalid_host"),
    ],
)
def test_check_address_for_the_peer_actually_connected_to(address, reason):
    assert check_address(address) == reason


def _octets(value: int, parts: int) -> list[int]:
    """Split a 32-bit value the way an inet_aton string with ``parts`` parts writes it."""
    head = [(value >> (24 - 8 * i)) & 0xFF for i in range(parts - 1)]
    return [*head, value & ((1 << (8 * (5 - parts))) - 1)]


_WRITE = {"dec": str, "oct": lambda n: f"0{n:o}", "hex": hex}  # 0 in octal is "00": still zero
_PART = st.sampled_from(sorted(_WRITE))


@given(
    value=st.integers(0, 2**32 - 1),
    parts=st.integers(1, 4),
    styles=st.lists(_PART, min_size=4, max_size=4),
    overflow=st.booleans(),
)
def test_numeric_hosts_are_read_as_inet_aton_reads_them(value, parts, styles, overflow):
    """Differential test against the C library: whatever getaddrinfo would connect to is checked."""
    numbers = _octets(value, parts)
    if overflow:
        numbers[0] += 256 if parts > 1 else 2**32
    host = ".".join(_WRITE[style](n) for style, n in zip(styles[:parts], numbers, strict=True))
    try:
        expected = address_reason(ipaddress.IPv4Address(socket.inet_aton(host)))
    except OSError:
        expected = "invalid_host"
    assert check_url(f"http://{host}/", internal=False, resolve=no_dns) == expected


def test_the_module_is_pure():
    """Importing it pulls in neither Ray nor Redis nor an HTTP client: the dispatcher does I/O."""
    code = (
        "import json, sys, runtime.subscriptions.webhooks\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'redis', 'httpx'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert json.loads(result.stdout) == []
