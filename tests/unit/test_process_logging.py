"""runtime/process_logging.py: the JSON and text lines, their context, the level, and that no
secret ESP issues or is given gets through, in fields, messages or tracebacks."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from runtime import process_logging as pl
from runtime.settings import EspSettings

OPERATOR_TOKEN = "esp_0123456789abcdef_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0U1v"  # esp_<16 hex>_<43>
WHSEC = "whsec_" + base64.b64encode(b"unit-signing-secret-0123456789ab").decode()
SERVER_SECRET = "server-secret-Zm9vYmFyYmF6cXV4cXV1eA"
REDIS_PASSWORD = "redis-pass-7f3e9a1c"
SOURCE_KEY = "unit-source-key-0123456789"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Each test configures the process's logging; put the root and ESP loggers back after."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, {n: logging.getLogger(n).level for n in pl.ESP_LOGGERS})
    secrets = pl._secrets[:]
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)
    pl._secrets[:] = secrets


def configured(log_format: pl.LogFormat = "json", level: str = "INFO", **settings: object) -> io.StringIO:
    out = io.StringIO()
    esp = EspSettings(log_format=log_format, log_level=level, **settings) if settings else None  # type: ignore[arg-type]
    pl.configure_process("esp-test", esp, log_format=log_format, log_level=level, stream=out)
    return out


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_json_line_has_the_fields_and_the_context_passed() -> None:
    out = configured()
    extra = pl.fields(event_id="e1", source="app", customer="c1", rule="r1", output_id="o1", partition=3, missing=None)
    logging.getLogger("runtime.partition").warning("event %s set aside", "e1", extra=extra)
    [line] = lines(out)
    assert line["level"] == "WARNING" and line["logger"] == "runtime.partition" and line["component"] == "esp-test"
    assert line["message"] == "event e1 set aside" and isinstance(line["pid"], int)
    assert str(line["ts"]).endswith("Z") and str(line["ts"])[10] == "T"
    assert {k: line[k] for k in ("event_id", "source", "customer", "rule", "output_id", "partition")} == {
        "event_id": "e1",
        "source": "app",
        "customer": "c1",
        "rule": "r1",
        "output_id": "o1",
        "partition": 3,
    }
    assert "missing" not in line


def test_the_context_of_a_block_is_on_every_line_and_extra_wins() -> None:
    out = configured()
    logger = logging.getLogger("serve.app")
    with pl.log_context(subscription="hook", destination="webhook:hook"):
        logger.info("one")
        logger.info("two", extra={"destination": "channel:sms"})
    logger.info("after")
    one, two, after = lines(out)
    assert one["subscription"] == "hook" and one["destination"] == "webhook:hook"
    assert two["destination"] == "channel:sms"
    assert "subscription" not in after


def test_an_exception_is_one_json_line_with_its_traceback() -> None:
    out = configured()
    try:
        raise RuntimeError("it broke")
    except RuntimeError:
        logging.getLogger("actors.partition_actor").exception("step failed")
    [line] = lines(out)
    assert line["level"] == "ERROR" and "RuntimeError: it broke" in str(line["exception"])
    assert len(out.getvalue().splitlines()) == 1


@pytest.mark.parametrize(
    "secret",
    [OPERATOR_TOKEN, WHSEC, SERVER_SECRET, REDIS_PASSWORD, SOURCE_KEY],
    ids=["operator-token", "webhook-secret", "server-secret", "redis-password", "source-key"],
)
def test_no_secret_gets_out_in_fields_message_or_traceback(secret: str) -> None:
    out = configured(secret=SecretStr(SERVER_SECRET), redis_url=SecretStr(f"redis://:{REDIS_PASSWORD}@db:6379/0"))
    logger = logging.getLogger("runtime.sources.ingest")
    logger.warning(
        "request with Authorization: Bearer %s", secret, extra={"headers": {"Authorization": f"Bearer {secret}"}}
    )
    logger.warning("values token=%s api_key: %s", secret, secret, extra={"api_key": secret, "secrets": [secret]})
    logger.warning("connecting to redis://:%s@db:6379/0 with 'password': '%s'", secret, secret)
    try:
        raise ValueError(f"bad credential {{'authorization': 'Bearer {secret}'}}")
    except ValueError:
        logger.exception("failed")
    text = out.getvalue()
    assert secret not in text
    assert secret.removeprefix("whsec_").removeprefix("esp_0123456789abcdef_") not in text
    assert len(lines(out)) == 4


def test_formats_esp_issues_are_recognised_anywhere_in_a_text() -> None:
    text = f"sent {OPERATOR_TOKEN} and {WHSEC} to https://user:pw-1234567@host/x?token=abc&n=1"
    redacted = pl.redact_text(text)
    assert redacted == "sent esp_0123456789abcdef_*** and whsec_*** to https://user:***@host/x?token=***&n=1"


def test_fields_named_like_secrets_are_hidden_and_others_kept() -> None:
    value = {"password": "p", "X-Receiver-Auth": "c", "cookie": "k", "key": "s", "rule": "r", "count": 3, "auth": True}
    hidden = {"password": "***", "X-Receiver-Auth": "***", "cookie": "***", "key": "***"}
    assert pl.redact_value("fields", value) == {**value, **hidden}


def test_text_mode_is_one_readable_line_with_context_and_no_secret() -> None:
    out = configured("text")
    logging.getLogger("runtime.x").warning("token=%s", OPERATOR_TOKEN, extra=pl.fields(customer="c1"))
    text = out.getvalue()
    assert "WARNING runtime.x [esp-test] token=*** customer=c1" in text
    assert OPERATOR_TOKEN not in text and not text.startswith("{")


def test_the_level_applies_to_esp_loggers_and_others_log_warnings_only() -> None:
    out = configured(level="WARNING")
    logging.getLogger("runtime.x").info("quiet")
    logging.getLogger("runtime.x").warning("loud")
    assert [line["message"] for line in lines(out)] == ["loud"]
    out = configured(level="DEBUG")
    logging.getLogger("actors.x").debug("esp debug")
    logging.getLogger("httpx").info("library info")
    assert [line["message"] for line in lines(out)] == ["esp debug"]


def test_configuring_again_replaces_the_handler() -> None:
    first = configured()
    second = configured()
    logging.getLogger("esp").warning("once")
    assert first.getvalue() == "" and len(lines(second)) == 1
    assert sum(getattr(h, "_esp", False) for h in logging.getLogger().handlers) == 1


def test_settings_choose_format_and_level() -> None:
    out = io.StringIO()
    pl.configure_process("esp-test", EspSettings(log_format="text", log_level="ERROR"), stream=out)
    logging.getLogger("runtime.x").warning("hidden")
    logging.getLogger("runtime.x").error("shown")
    assert out.getvalue().splitlines()[0].endswith("ERROR runtime.x [esp-test] shown")


def test_a_bad_level_or_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log level"):
        pl.configure_process("esp-test", log_format="json", log_level="LOUD", stream=io.StringIO())
    with pytest.raises(ValueError, match="log format"):
        pl.configure_process("esp-test", log_format="xml", log_level="INFO", stream=io.StringIO())  # type: ignore[arg-type]


def test_without_a_stream_lines_go_to_the_current_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    pl.configure_process("esp-test", log_format="json", log_level="INFO")
    logging.getLogger("serve.app").info("to stderr", extra=pl.fields(source="app"))
    captured = capsys.readouterr()
    assert captured.out == "" and json.loads(captured.err)["source"] == "app"


def test_the_environment_chooses_and_bad_settings_fall_back_to_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ESP_LOG_FORMAT", "text")
    pl.configure_from_environment("esp-cli")
    logging.getLogger("runtime.cli").warning("plain")
    assert "WARNING runtime.cli [esp-cli] plain" in capsys.readouterr().err
    monkeypatch.setenv("ESP_LOG_FORMAT", "xml")
    pl.configure_from_environment("esp-cli")
    logging.getLogger("runtime.cli").warning("still logged")
    assert json.loads(capsys.readouterr().err)["message"] == "still logged"


def test_a_delivery_is_logged_with_its_outputs() -> None:
    from runtime.subscriptions.dispatch import outputs_context

    one = {"id": "o1", "subject": "c1", "data": {"rule": "r1"}}
    assert outputs_context([one]) == {"output_id": "o1", "customer": "c1", "rule": "r1"}
    two = {"id": "o2", "subject": "c1", "data": {"rule": "r1"}}
    assert outputs_context([one, two]) == {"output_id": ["o1", "o2"], "customer": "c1", "rule": "r1"}
    assert outputs_context([{"id": "o3", "data": "not a dict"}]) == {"output_id": "o3"}
    # a re-published event's own data may hold a "rule" of any shape: it is not a rule's name
    odd = {"id": "o4", "subject": "c1", "data": {"rule": {"nested": [1]}}}
    assert outputs_context([odd, two]) == {"output_id": ["o4", "o2"], "customer": "c1", "rule": "r1"}
