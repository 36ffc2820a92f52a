"""``esp deadletters`` and ``esp messages``: what webhook and channel delivery could not do,
and what the built-in local gateway received."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from runtime.dev.client import EspClient
from runtime.errors import EspError

DEFAULT_URL = "http://127.0.0.1:8000"

url_option = click.option("--url", default=DEFAULT_URL, show_default=True)
token_option = click.option(
    "--token",
    envvar="ESP_SUBSCRIBER_TOKEN",
    help="The subscriber's token; default: the operator token (ESP_TOKEN or <state dir>/admin.token).",
)
channel_option = click.option("--channel", "is_channel", is_flag=True, help="NAME is a channel, not a subscription.")


def _path(name: str, is_channel: bool) -> str:
    return f"/v1/{'channels' if is_channel else 'subscriptions'}/{name}/deadletters"


def _call(url: str, token: str | None, method: str, path: str, **kwargs: object) -> dict:
    with EspClient(url, token=token) as client:
        try:
            return client.request(method, path, **kwargs)  # type: ignore[arg-type]
        except EspError as exc:
            click.echo(json.dumps({"error": exc.to_dict()}), err=True)
            sys.exit(2)


@click.group()
def deadletters() -> None:
    """Events a webhook receiver or channel gateway never took (after all retries, or refused)."""


@deadletters.command("list")
@click.argument("name")
@channel_option
@url_option
@token_option
@click.option("--limit", default=20, show_default=True)
def deadletters_list(name: str, is_channel: bool, url: str, token: str | None, limit: int) -> None:
    """Newest first, with the last status and error."""
    answer = _call(url, token, "GET", _path(name, is_channel), params={"limit": limit})
    click.echo(f"{answer['total']} dead letters")
    for item in answer["items"]:
        event = item["event"]
        click.echo(
            f"  {item['id']}  {event.get('type')}  {event.get('id')}  after {item['attempts']} attempts: "
            f"{item['status'] or '-'} {item['error'][:120]}"
        )


@deadletters.command("replay")
@click.argument("name")
@click.argument("ids", nargs=-1)
@channel_option
@url_option
@token_option
def deadletters_replay(name: str, ids: tuple[str, ...], is_channel: bool, url: str, token: str | None) -> None:
    """Deliver dead letters again (these ids, or all); receivers see the same webhook-id."""
    body = {"ids": list(ids)} if ids else {}
    answer = _call(url, token, "POST", _path(name, is_channel) + "/replay", json=body)
    click.echo(f"replayed {answer['replayed']}")


@click.command()
@click.option("--channel", help="Only this channel (or webhook path name).")
@click.option("--limit", default=20, show_default=True)
@click.option("--state-dir", type=click.Path(path_type=Path), default=Path(".esp"), show_default=True)
def messages(channel: str | None, limit: int, state_dir: Path) -> None:
    """What the built-in local gateway received: the messages channels would have sent."""
    from runtime.dev.gateway import read_messages

    found = read_messages(state_dir / "gateway" / "messages.jsonl", channel=channel, limit=limit)
    if not found:
        click.echo("no messages recorded (is the local gateway running? 'esp up' starts it)")
    for message in found:
        body = message["body"]
        text = body.get("message", body) if isinstance(body, dict) else body
        to = body.get("to", "") if isinstance(body, dict) else ""
        click.echo(f"{message['received_at']}  {message['channel']:14s} {to:12s} {text}")
