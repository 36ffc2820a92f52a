"""The console's pure parts: error lines in YAML, signed sessions, translations, overview figures."""

from __future__ import annotations

import pytest
import yaml

from runtime.config.documents import parse_document
from runtime.console import i18n, session
from runtime.console.overview import summarize
from runtime.console.yamllines import line_of, place, yaml_error_line
from runtime.errors import ConfigError

RULE = """kind: rule
name: r
when:
  event: order
  bogus: 1
then:
  - emit: x
  - emit:
      - 1
"""


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("kind", 1),
        ("when.event", 4),
        ("when.bogus", 5),
        ("when.EventLeaf.bogus", 5),  # a union tag names no node: skipped
        ("then.0.emit", 7),
        ("then.1.emit", 8),  # a list or mapping: the key naming it
        ("then.1.emit.0", 9),
        ("then.5.emit", 6),  # no such item: the list's key
        ("when.missing", 3),  # a missing field: the mapping that should hold it
        ("", 1),
    ],
)
def test_a_path_points_at_its_node_line(path: str, line: int) -> None:
    assert line_of(RULE, path) == line


def test_an_empty_value_points_at_its_key() -> None:
    assert line_of("kind: rule\nname:\nwhen: {}\n", "name") == 2


def test_unparseable_yaml_has_no_node_line_but_a_syntax_line() -> None:
    text = "kind: rule\nname: [unclosed\nwhen: x\n"
    assert line_of(text, "name") is None
    with pytest.raises(yaml.YAMLError) as caught:
        yaml.safe_load(text)
    assert yaml_error_line(caught.value) in (2, 3)


def test_validation_errors_of_a_real_document_are_placed_at_their_lines() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_document(yaml.safe_load(RULE))
    placed = {e["path"]: e["line"] for e in place(RULE, caught.value.errors)}
    assert placed["when.bogus"] == 5
    assert placed["then.1.emit"] == 8


def test_a_session_cookie_round_trips_and_refuses_forgery_and_expiry() -> None:
    secret = b"s" * 32
    s = session.Session("ops", "operator", "0123456789abcdef", expires_ms=2_000)
    cookie = session.sign(secret, s)
    assert session.verify(secret, cookie, now_ms=1_000) == s
    assert session.verify(secret, cookie, now_ms=2_000) is None  # expired
    assert session.verify(b"t" * 32, cookie, now_ms=1_000) is None  # another server's
    body, mac = cookie.split(".")
    forged = session.sign(secret, session.Session("ops", "admin", "0123456789abcdef", 2_000)).split(".")[0]
    assert session.verify(secret, f"{forged}.{mac}", now_ms=1_000) is None
    for junk in (None, "", "x", "a.b.c", f"{body}.{'0' * 64}"):
        assert session.verify(secret, junk, now_ms=1_000) is None
    assert session.csrf_token(secret, cookie) != session.csrf_token(secret, cookie + "x")


def test_a_token_id_is_taken_from_the_token_and_never_more() -> None:
    assert session.token_id("esp_0123456789abcdef_" + "s" * 43) == "0123456789abcdef"
    assert session.token_id("nonsense") == ""


def test_every_chinese_word_has_an_english_one_and_the_language_is_picked() -> None:
    assert set(i18n.ZH) <= set(i18n.EN)
    assert i18n.translate("zh", "overview") == "概览"
    assert i18n.translate("zh", "signed_in_as", name="a", role="viewer") == "a (viewer)"  # English fallback
    assert i18n.translate("en", "applied", version=3) == "Applied: version 3."
    assert i18n.translate("fr", "no-such-key") == "no-such-key"
    assert i18n.pick(None, "zh-CN,zh;q=0.9") == "zh"
    assert i18n.pick("en", "zh-CN") == "en"
    assert i18n.pick("xx", "de-DE") == "en"


METRICS = """# TYPE esp_ingest_events_total counter
esp_ingest_events_total{source="web",outcome="accepted",reason="",WorkerId="a"} 5.0
esp_ingest_events_total{source="web",outcome="accepted",reason="",WorkerId="b"} 2.0
esp_ingest_events_total{source="web",outcome="rejected",reason="bad",WorkerId="a"} 1.0
# TYPE esp_rule_fires_total counter
esp_rule_fires_total{rule="welcome",WorkerId="a"} 3.0
esp_rule_fires_total{rule="welcome",WorkerId="b"} 4.0
# TYPE esp_partition_lag_entries gauge
esp_partition_lag_entries{partition="1",WorkerId="a"} 2.0
esp_partition_lag_entries{partition="1",WorkerId="b"} 7.0
# TYPE esp_partition_watermark_delay_seconds gauge
esp_partition_watermark_delay_seconds{partition="1"} 1.5
# TYPE esp_delivery_retries_total counter
esp_delivery_retries_total{destination="sms"} 2.0
# TYPE esp_delivery_dead_letters_total counter
esp_delivery_dead_letters_total{destination="sms"} 1.0
# TYPE esp_contact_decisions_total counter
esp_contact_decisions_total{outcome="sent"} 9.0
esp_contact_decisions_total{outcome="suppressed:cap"} 1.0
"""


def test_the_overview_sums_counters_over_processes_and_keeps_the_largest_gauge() -> None:
    o = summarize(METRICS)
    assert o["sources"]["web"]["accepted"] == 7 and o["sources"]["web"]["rejected"] == 1
    assert o["rules"] == {"welcome": 7}
    assert o["partitions"]["1"] == {"lag": 7, "watermark_delay_s": 1.5}
    assert o["destinations"]["sms"] == {"delivered": 0, "retries": 2, "dead": 1}
    assert o["decisions"] == {"sent": 9, "suppressed:cap": 1}
    assert summarize("") == {"sources": {}, "rules": {}, "partitions": {}, "destinations": {}, "decisions": {}}


def test_the_editor_loads_plain_yaml_and_refuses_aliases_and_deep_nesting_at_their_line():
    from runtime.console.yamllines import MAX_DEPTH, Unsupported, load

    assert load("kind: rule\nname: r\nwhen: {event: a}\n") == {"kind": "rule", "name": "r", "when": {"event": "a"}}
    bomb = "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n"  # a few lines can stand for millions of nodes
    with pytest.raises(Unsupported, match="anchors and aliases") as refused:
        load(bomb)
    assert yaml_error_line(refused.value) == 1
    deep = "kind: rule\nwhen: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n"
    with pytest.raises(Unsupported, match=f"deeper than {MAX_DEPTH}") as refused:
        load(deep)
    assert yaml_error_line(refused.value) == 2
    nested = MAX_DEPTH - 1  # inside the top mapping: MAX_DEPTH levels in all, the bound itself
    assert load("a: " + "[" * nested + "]" * nested) is not None
