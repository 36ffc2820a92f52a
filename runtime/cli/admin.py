"""``esp tokens`` and ``esp audit``: operator credentials and the trail of what they changed.

Both talk to the API with the operator token the CLI uses everywhere (``ESP_TOKEN``, else the
bootstrap admin token in ``<state dir>/admin.token``); managing tokens needs role admin.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from runtime.dev.client import EspClient
from runtime.durations import parse_duration_ms
from runtime.errors import EspError

DEFAULT_URL = "http://127.0.0.1:8000"
url_option = click.option("--url", default=DEFAULT_URL, show_default=True)


def _call(url: str, method: str, path: str, **kwargs: Any) -> Any:
    with EspClient(url) as client:
        try:
            return client.request(method, path, **kwargs)
        except EspError as exc:
            click.echo(json.dumps({"error": exc.to_dict()}), err=True)
            sys.exit(2)


@click.group()
def tokens() -> None:
    """Operator tokens: admin (everything), operator (config, campaigns, reference data,
    replays), viewer (read only)."""


@tokens.command("create")
@click.option("--name", required=True, help="Unique among live tokens; shown in the audit trail.")
@click.option("--role", required=True, type=click.Choice(["viewer", "operator", "admin"]))
@click.option("--expires-in", help="e.g. 90d or 12h; default: never.")
@url_option
def tokens_create(name: str, role: str, expires_in: str | None, url: str) -> None:
    """Create a token and print it: this is the only time it is shown."""
    body: dict[str, Any] = {"name": name, "role": role}
    if expires_in:
        body["expires_in_s"] = _seconds(expires_in, "--expires-in")
    made = _call(url, "POST", "/v1/tokens", json=body)
    click.echo(made["token"])
    click.echo(f"token {name!r} (role {role}) created; store it now, it is not shown again", err=True)


@tokens.command("list")
@url_option
def tokens_list(url: str) -> None:
    """Every token with its role, creation, expiry and revocation (never the secret)."""
    for item in _call(url, "GET", "/v1/tokens")["items"]:
        state = "revoked" if item["revoked_at"] else "expired" if _expired(item) else "active"
        expires = _when(item["expires_at"]) if item["expires_at"] else "never"
        click.echo(
            f"{item['name']:<24} {item['role']:<9} {state:<8} created {_when(item['created_at'])}  expires {expires}"
        )


@tokens.command("revoke")
@click.argument("name")
@url_option
def tokens_revoke(name: str, url: str) -> None:
    """Revoke a token at once (its name can be used again)."""
    _call(url, "DELETE", f"/v1/tokens/{name}")
    click.echo(f"token {name!r} revoked")


@click.command()
@click.option("--action", help="e.g. config, config.put, token, optout, replay.")
@click.option("--who", help="A token name.")
@click.option("--target", help="e.g. rule/my-rule, or rule for every rule.")
@click.option("--since", help="Only records newer than this long ago, e.g. 1h or 7d.")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON record per line.")
@url_option
def audit(
    action: str | None, who: str | None, target: str | None, since: str | None, limit: int, as_json: bool, url: str
) -> None:
    """The audit trail, newest first: who changed what, when and from where."""
    params: dict[str, Any] = {"limit": limit}
    params.update({k: v for k, v in (("action", action), ("who", who), ("target", target)) if v})
    if since:
        params["since_ms"] = int((time.time() - _seconds(since, "--since")) * 1000)
    for item in _call(url, "GET", "/v1/audit", params=params)["items"]:
        if as_json:
            click.echo(json.dumps(item, ensure_ascii=False))
            continue
        click.echo(
            f"{_when(item['at'])}  {item['who']} ({item['role']}) from {item['remote'] or '-'}: "
            f"{item['action']} {item['target']}  {_summary(item['detail'])}"
        )


def _seconds(text: str, option: str) -> float:
    try:
        return parse_duration_ms(text) / 1000
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def _expired(item: dict[str, Any]) -> bool:
    return item["expires_at"] is not None and item["expires_at"] <= time.time() * 1000


def _summary(detail: Any) -> str:
    if isinstance(detail, dict) and "changes" in detail:
        paths = [c["path"] for c in detail["changes"]]
        return f"version {detail.get('version')}: {len(paths)} change(s) {', '.join(paths[:5])}"
    text = json.dumps(detail, ensure_ascii=False)
    return text if len(text) <= 160 else text[:157] + "..."
