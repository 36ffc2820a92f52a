"""The operator console: server-rendered pages under ``/console`` in the API's own app.

Signed in with an operator or viewer token (a form; the answer is a signed, HttpOnly,
SameSite=Strict session cookie holding the token's id, never the token). Viewers read every
page; applying, rolling back and replaying need the operator role. Every form carries a token
bound to the session (CSRF). The pages call the same store and domain functions the JSON API
routes call, and record changes in the same audit trail. The routes stay out of the OpenAPI
schema; their access level in ``serve/access.py`` is ``console`` (the session is checked here).

The routes are methods of :class:`ConsoleRoutes`, a base class of the API deployment, so they
run on the replica with its Redis clients and stores.
"""

from __future__ import annotations

import difflib
import time
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import httpx
import jinja2
import orjson
import ray
import yaml
from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from runtime import keys
from runtime.config.documents import KINDS
from runtime.config.store import prepare_document
from runtime.console import i18n, session
from runtime.console.golive import logged_events
from runtime.console.overview import summarize
from runtime.console.yamllines import load, place, yaml_error_line
from runtime.errors import ConfigError, EspError, NotFound
from runtime.events.trace import trace_event
from runtime.rules.backtest import backtest_logged
from runtime.rules.models import Rule
from runtime.security.tokens import LOCAL, Principal
from runtime.subscriptions.deadletters import list_dead, replay_dead
from runtime.subscriptions.models import REDACTED, public_view
from runtime.subscriptions.outbox import last_fires
from serve.exposition import esp_series

HERE = Path(__file__).parent
STATIC = HERE / "static"
router = APIRouter(include_in_schema=False)
_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined
)
_templates.filters["yamlish"] = lambda value: yaml.safe_dump(
    value, sort_keys=False, allow_unicode=True, default_flow_style=False
).strip()
PROFILE_GROUPS = ("tags", "segments", "scores")


async def read_form(request: Request) -> dict[str, str]:
    """A posted ``application/x-www-form-urlencoded`` form (the only kind the console sends; the
    app's body limit applies), last value of each field."""
    body = (await request.body()).decode("utf-8", "replace")
    return dict(parse_qsl(body, keep_blank_values=True))


class SignIn(Exception):
    """No valid session: the browser is sent to the sign-in page."""


def install(app: FastAPI) -> None:
    @app.exception_handler(SignIn)
    async def _sign_in(request: Request, exc: SignIn) -> Response:
        return RedirectResponse("/console/login", status_code=303)


def to_yaml(document: dict[str, Any]) -> str:
    """A stored document as the editor shows it: without the store's bookkeeping."""
    shown = {k: v for k, v in document.items() if k not in ("version", "updated_at")}
    return yaml.safe_dump(shown, sort_keys=False, allow_unicode=True, default_flow_style=False)


def unified_diff(current: str, proposed: str) -> str:
    lines = difflib.unified_diff(
        current.splitlines(keepends=True), proposed.splitlines(keepends=True), "current", "proposed"
    )
    return "".join(lines)


def _time(ms: Any) -> str:
    if not isinstance(ms, (int, float)):
        return str(ms)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


def _parse_time(text: str) -> int | None:
    for fmt in ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            import calendar

            return calendar.timegm(time.strptime(text.strip(), fmt)) * 1000
        except ValueError:
            continue
    return None


class ConsoleRoutes:
    """The console's routes (mixed into the API deployment, which provides ``settings``,
    ``redis``, ``config``, ``tokens``, ``audit``, ``ingestor``, ``profiles``, ``ledger``,
    ``directory``)."""

    settings: Any
    redis: Any
    config: Any
    tokens: Any
    audit: Any
    ingestor: Any
    profiles: Any
    ledger: Any
    directory: Any

    # --- sessions and rendering ----------------------------------------------------------

    def _secret(self) -> bytes:
        secret = getattr(self, "_console_secret", None)
        if secret is None:
            secret = self.settings.server_secret().encode()
            self._console_secret = secret
        return secret

    def _who(self, request: Request) -> Principal:
        """The signed-in principal (everyone is the local admin when auth is off)."""
        if self.tokens is None:
            return LOCAL
        found = session.verify(self._secret(), request.cookies.get(session.COOKIE), int(time.time() * 1000))
        if found is None or not self.tokens.usable(found.token_id):
            raise SignIn()
        return Principal(found.name, found.role)

    def _lang(self, request: Request) -> str:
        return i18n.pick(request.cookies.get(session.LANG_COOKIE), request.headers.get("accept-language"))

    def _csrf(self, request: Request) -> str:
        cookie = request.cookies.get(session.COOKIE)
        return session.csrf_token(self._secret(), cookie) if cookie else ""

    def _render(
        self, request: Request, template: str, who: Principal | None, *, status: int = 200, **context: Any
    ) -> HTMLResponse:
        lang = self._lang(request)
        page = _templates.get_template(template).render(
            t=partial(i18n.translate, lang),
            lang=lang,
            who=who,
            auth=self.tokens is not None,
            csrf=self._csrf(request),
            path=request.url.path,
            fmt_time=_time,
            **context,
        )
        return HTMLResponse(page, status_code=status)

    async def _form(self, request: Request, who: Principal, *, operator: bool) -> dict[str, str]:
        """The posted form, once its CSRF token is checked (and the operator role, if needed)."""
        form = await read_form(request)
        if self.tokens is not None and form.get("csrf") != self._csrf(request):
            raise Forbidden("the form is stale or forged (CSRF token mismatch): reload the page")
        if operator and not who.can("operator"):
            raise Forbidden(i18n.translate(self._lang(request), "needs_operator", role=who.role))
        return form

    def _refusal(self, request: Request, who: Principal, exc: Exception) -> HTMLResponse:
        status = 403 if isinstance(exc, Forbidden) else 404 if isinstance(exc, NotFound) else 400
        return self._render(request, "error.html", who, status=status, message=str(exc))

    # --- sign-in -------------------------------------------------------------------------

    @router.get("/console")
    def console_home(self) -> RedirectResponse:
        return RedirectResponse("/console/overview", status_code=303)

    @router.get("/console/static/{name}")
    def console_static(self, name: str) -> Response:
        path = STATIC / name
        if name not in {p.name for p in STATIC.iterdir()}:
            return Response("not found", status_code=404)
        return FileResponse(path, headers={"Cache-Control": "max-age=300"})

    @router.get("/console/login")
    def console_login_page(self, request: Request) -> HTMLResponse:
        return self._render(request, "login.html", None, error=None)

    @router.post("/console/login")
    async def console_login(self, request: Request) -> Response:
        form = await read_form(request)
        token = form.get("token", "").strip()
        lang = self._lang(request)
        if self.tokens is None:
            return RedirectResponse("/console/overview", status_code=303)
        if not token:
            return self._render(request, "login.html", None, status=400, error=i18n.translate(lang, "no_token"))
        try:
            principal = await run_in_threadpool(self.tokens.verify, token)
        except EspError as exc:
            error = i18n.translate(lang, "bad_token", why=exc.message)
            return self._render(request, "login.html", None, status=401, error=error)
        expires = int(time.time() * 1000) + session.TTL_S * 1000
        cookie = session.sign(
            self._secret(), session.Session(principal.name, principal.role, session.token_id(token), expires)
        )
        response = RedirectResponse("/console/overview", status_code=303)
        response.set_cookie(
            session.COOKIE,
            cookie,
            max_age=session.TTL_S,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/console",
        )
        return response

    @router.post("/console/logout")
    def console_logout(self) -> Response:
        response = RedirectResponse("/console/login", status_code=303)
        response.delete_cookie(session.COOKIE, path="/console")
        return response

    @router.get("/console/lang")
    def console_lang(self, request: Request, to: str = "en", back: str = "/console/overview") -> Response:
        target = back if back.startswith("/console") else "/console/overview"
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(session.LANG_COOKIE, to if to in i18n.LANGUAGES else "en", samesite="strict", path="/")
        return response

    # --- overview ------------------------------------------------------------------------

    async def _overview(self) -> dict[str, Any]:
        text = ""
        url = f"http://{ray.util.get_node_ip_address()}:{self.settings.metrics_export_port}/metrics"
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                text = esp_series((await client.get(url)).text)
        except httpx.HTTPError:
            pass
        figures = summarize(text)

        def from_redis() -> tuple[dict[str, Any], dict[str, int]]:
            raw = self.redis.hgetall(keys.PARTITION_STATUS)
            status = {str(int(p)): orjson.loads(v) for p, v in raw.items()}
            quarantined: dict[str, int] = {}
            for item in self.ingestor.quarantine.list(limit=1000):  # the newest: a live page stays cheap
                quarantined[item["source"]] = quarantined.get(item["source"], 0) + 1
            return status, quarantined

        status, quarantined = await run_in_threadpool(from_redis)
        outcomes = ("accepted", "duplicate", "rejected", "dropped", "filtered")
        for name, n in quarantined.items():
            figures["sources"].setdefault(name, dict.fromkeys(outcomes, 0.0))["quarantined"] = n
        for p, s in status.items():
            figures["partitions"].setdefault(p, {}).update(s)
        figures["partitions"] = dict(sorted(figures["partitions"].items(), key=lambda kv: int(kv[0] or -1)))
        return figures

    @router.get("/console/overview")
    async def console_overview(self, request: Request) -> HTMLResponse:
        who = self._who(request)
        return self._render(request, "overview.html", who, o=await self._overview())

    @router.get("/console/overview/live")
    async def console_overview_live(self, request: Request) -> HTMLResponse:
        who = self._who(request)
        return self._render(request, "overview_live.html", who, o=await self._overview())

    # --- configuration -------------------------------------------------------------------

    @router.get("/console/config")
    def console_config(self, request: Request) -> HTMLResponse:
        who = self._who(request)
        documents = {kind: self.config.list(kind) for kind in KINDS}
        return self._render(request, "config.html", who, documents=documents, kinds=list(KINDS))

    def _editor(
        self, request: Request, who: Principal, kind: str, name: str, *, status: int = 200, **context: Any
    ) -> HTMLResponse:
        current = self.config.find(kind, name)
        history = self.config.history(kind, name) if current is not None or context.get("text") else []
        text = context.pop("text", None)
        if text is None:
            text = to_yaml(public_view(kind, current)) if current else f"kind: {kind}\nname: {name}\n"
        context = {"errors": [], "notice": None, "diff": None, **context}
        return self._render(
            request, "editor.html", who, status=status, kind=kind, name=name, text=text, current=current,
            history=list(reversed(history)), **context,
        )  # fmt: skip

    @router.get("/console/config/{kind}/{name}")
    def console_document(self, request: Request, kind: str, name: str) -> HTMLResponse:
        who = self._who(request)
        if kind not in KINDS:
            return self._refusal(request, who, NotFound(f"unknown config kind {kind!r}"))
        return self._editor(request, who, kind, name)

    @router.post("/console/config/{kind}/{name}")
    async def console_document_post(self, request: Request, kind: str, name: str) -> HTMLResponse:
        who = self._who(request)
        if kind not in KINDS:
            return self._refusal(request, who, NotFound(f"unknown config kind {kind!r}"))
        try:
            form = await self._form(request, who, operator=False)
        except Forbidden as exc:
            return self._refusal(request, who, exc)
        action = form.get("action", "dryrun")
        if action == "apply" and not who.can("operator"):
            return self._refusal(
                request, who, Forbidden(i18n.translate(self._lang(request), "needs_operator", role=who.role))
            )
        text = form.get("yaml", "").replace("\r\n", "\n")
        lang = self._lang(request)
        try:
            raw = load(text)
        except yaml.YAMLError as exc:
            error = {"path": "(yaml)", "expected": str(exc).splitlines()[0], "got": None, "line": yaml_error_line(exc)}
            return self._editor(request, who, kind, name, status=422, text=text, errors=[error])
        if REDACTED in text:
            return self._editor(request, who, kind, name, status=422, text=text, errors=[
                {"path": "(document)", "expected": i18n.translate(lang, "redacted"), "got": None, "line": None}
            ])  # fmt: skip
        try:
            await run_in_threadpool(partial(prepare_document, raw, self.config.find, kind=kind, name=name))
        except ConfigError as exc:
            errors = place(text, exc.errors or [{"path": "", "expected": exc.message, "got": None}])
            return self._editor(request, who, kind, name, status=422, text=text, errors=errors)
        except EspError as exc:
            errors = [{"path": "(document)", "expected": exc.message, "got": None, "line": None}]
            return self._editor(request, who, kind, name, status=422, text=text, errors=errors)
        if action == "diff":
            current = self.config.find(kind, name)
            proposed = to_yaml(raw)
            changes = unified_diff(to_yaml(public_view(kind, current)) if current else "", proposed)
            return self._editor(request, who, kind, name, text=text, diff=changes or i18n.translate(lang, "no_changes"))
        if action != "apply":
            return self._editor(request, who, kind, name, text=text, notice=i18n.translate(lang, "valid"))
        result = await run_in_threadpool(self._apply, request, who, kind, name, raw)
        return self._editor(request, who, kind, name, notice=i18n.translate(lang, "applied", version=result["version"]))

    def _apply(
        self, request: Request, who: Principal, kind: str, name: str, raw: Any, action: str = "config.put"
    ) -> dict[str, Any]:
        from runtime.security.audit import diff

        def comparable(record: dict[str, Any] | None) -> dict[str, Any]:
            shown = public_view(kind, record) if record else {}
            return {k: v for k, v in shown.items() if k not in ("version", "updated_at")}

        before = self.config.find(kind, name)
        result = self.config.put(raw, kind=kind, name=name)
        changes = diff(comparable(before), comparable(self.config.get(kind, name)))
        remote = request.client.host if request.client else None
        detail = {"version": result["version"], "changes": changes, "via": "console"}
        self.audit.record(who, action, f"{kind}/{name}", remote=remote, detail=detail)
        return result

    @router.post("/console/config/{kind}/{name}/rollback")
    async def console_rollback(self, request: Request, kind: str, name: str) -> HTMLResponse:
        who = self._who(request)
        try:
            form = await self._form(request, who, operator=True)
            version = int(form.get("version", ""))
            found = [h for h in self.config.history(kind, name) if h.get("version") == version]
            if not found:
                raise NotFound(f"version {version} of {kind}/{name} is not kept")
            raw = {k: v for k, v in found[0].items() if k not in ("version", "updated_at")}
            if REDACTED in str(raw):
                raise Forbidden(i18n.translate(self._lang(request), "redacted"))
            result = await run_in_threadpool(self._apply, request, who, kind, name, raw, "config.rollback")
        except (Forbidden, EspError, ValueError) as exc:
            return self._refusal(request, who, exc)
        notice = i18n.translate(self._lang(request), "rolled_back", version=result["version"])
        return self._editor(request, who, kind, name, notice=notice)

    # --- a customer, an event ------------------------------------------------------------

    @router.get("/console/customer")
    async def console_customer(self, request: Request, id: str = "") -> HTMLResponse:
        who = self._who(request)
        if not id:
            return self._render(request, "customer.html", who, customer="", data=None)
        attributes = (await run_in_threadpool(self.profiles.get_many, [id])).get(id, {})
        groups = {g: attributes.get(g) for g in PROFILE_GROUPS if g in attributes}
        profile = {k: v for k, v in attributes.items() if k not in PROFILE_GROUPS}
        try:
            actor = await run_in_threadpool(self.directory.owner, id)
            state = actor.explain.remote(id, None)
            contacts = await run_in_threadpool(self.ledger.recent, id)
            fires = await run_in_threadpool(
                partial(last_fires, self.redis, id, partitions=self.settings.partitions, rule=None)
            )
            answer = await state
        except EspError as exc:
            return self._refusal(request, who, exc)
        for entry in answer["rules"]:
            entry["last_fires"] = fires.get(entry["rule"], [])
        data = {"profile": profile, "groups": groups, "rules": answer["rules"], "contacts": contacts}
        return self._render(request, "customer.html", who, customer=id, data=data)

    @router.get("/console/event")
    def console_event(self, request: Request, source: str = "", id: str = "") -> HTMLResponse:
        who = self._who(request)
        trace = None
        if source and id:
            try:
                self.config.get("source", source)
            except EspError as exc:
                return self._refusal(request, who, exc)
            trace = trace_event(
                self.redis,
                source,
                id,
                now_ms=int(time.time() * 1000),
                days=self.ingestor.horizon_days(source),
                partitions=self.settings.partitions,
            )
        sources = [d["name"] for d in self.config.list("source")]
        return self._render(request, "event.html", who, source=source, event_id=id, trace=trace, sources=sources)

    # --- quarantine and dead letters -----------------------------------------------------

    @router.get("/console/quarantine")
    def console_quarantine(self, request: Request, source: str = "", reason: str = "") -> HTMLResponse:
        who = self._who(request)
        items = self.ingestor.quarantine.list(source=source or None, reason=reason or None, limit=200)
        return self._render(
            request, "quarantine.html", who, items=items, source=source, reason=reason, notice=None,
            total=self.ingestor.quarantine.count(),
        )  # fmt: skip

    @router.get("/console/quarantine/{qid}")
    def console_quarantined(self, request: Request, qid: str) -> HTMLResponse:
        who = self._who(request)
        try:
            entry = self.ingestor.quarantine.get(qid)
        except EspError as exc:
            return self._refusal(request, who, exc)
        return self._render(request, "quarantined.html", who, entry=entry)

    @router.post("/console/quarantine/replay")
    async def console_quarantine_replay(self, request: Request) -> HTMLResponse:
        who = self._who(request)
        try:
            form = await self._form(request, who, operator=True)
        except Forbidden as exc:
            return self._refusal(request, who, exc)
        source, reason = form.get("source") or None, form.get("reason") or None

        def replay() -> dict[str, Any]:
            result = self.ingestor.replay(source=source, reason=reason, limit=10_000)
            detail = {"source": source, "reason": reason, "limit": 10_000, "result": result, "via": "console"}
            remote = request.client.host if request.client else None
            self.audit.record(who, "quarantine.replay", "quarantine", remote=remote, detail=detail)
            return result

        result = await run_in_threadpool(replay)
        items = self.ingestor.quarantine.list(source=source, reason=reason, limit=200)
        notice = i18n.translate(
            self._lang(request), "replayed", result=", ".join(f"{k} {v}" for k, v in result.items()) or "0"
        )
        return self._render(
            request, "quarantine.html", who, items=items, source=source or "", reason=reason or "", notice=notice,
            total=self.ingestor.quarantine.count(),
        )  # fmt: skip

    def _destinations(self) -> list[tuple[str, str]]:
        return [("channel", d["name"]) for d in self.config.list("channel")] + [
            ("subscription", d["name"]) for d in self.config.list("subscription") if d.get("mode") == "webhook"
        ]

    def _dead_stream(self, kind: str, name: str) -> str:
        if kind not in ("channel", "subscription"):
            raise NotFound(f"no destination kind {kind!r}")
        self.config.get(kind, name)
        return keys.channel_stream(name) if kind == "channel" else keys.subscription_stream(name)

    @router.get("/console/deadletters")
    def console_deadletters(self, request: Request, kind: str = "", name: str = "") -> HTMLResponse:
        who = self._who(request)
        dead = None
        if kind and name:
            try:
                dead = list_dead(self.redis, self._dead_stream(kind, name), limit=200)
            except EspError as exc:
                return self._refusal(request, who, exc)
        return self._render(
            request, "deadletters.html", who, destinations=self._destinations(), kind=kind, name=name, dead=dead,
            notice=None,
        )  # fmt: skip

    @router.post("/console/deadletters/replay")
    async def console_deadletters_replay(self, request: Request) -> HTMLResponse:
        who = self._who(request)
        try:
            form = await self._form(request, who, operator=True)
            kind, name = form.get("kind", ""), form.get("name", "")
            stream = self._dead_stream(kind, name)
        except (Forbidden, EspError) as exc:
            return self._refusal(request, who, exc)
        replayed = replay_dead(self.redis, stream, ids=None)
        remote = request.client.host if request.client else None
        self.audit.record(who, "deadletter.replay", f"{kind}/{name}", remote=remote, detail={"replayed": replayed})
        notice = i18n.translate(self._lang(request), "replayed", result=f"replayed {replayed}")
        dead = list_dead(self.redis, stream, limit=200)
        return self._render(
            request, "deadletters.html", who, destinations=self._destinations(), kind=kind, name=name, dead=dead,
            notice=notice,
        )  # fmt: skip

    # --- before go-live, campaigns -------------------------------------------------------

    @router.get("/console/golive")
    async def console_golive(self, request: Request, rule: str = "", start: str = "", end: str = "") -> HTMLResponse:
        who = self._who(request)
        rules = [d["name"] for d in self.config.list("rule")]
        result, error = None, None
        if rule:
            try:
                doc = self.config.get("rule", rule)
                model = Rule.model_validate({k: v for k, v in doc.items() if k not in ("version", "updated_at")})
                now = int(time.time() * 1000)
                from_ms = _parse_time(start) if start else now - 7 * 86_400_000
                to_ms = _parse_time(end) if end else now
                if from_ms is None or to_ms is None:
                    raise ConfigError(f"times look like 2026-01-31T08:00, got {start!r} and {end!r}")

                def run() -> dict[str, Any]:
                    events = logged_events(self.redis, self.settings.partitions, from_ms, to_ms)
                    customers = {e.customer for e in events}
                    profiles = self.profiles.get_many(sorted(customers)) if customers else {}
                    return backtest_logged(model, events, profiles=profiles)

                result = await run_in_threadpool(run)
            except EspError as exc:
                error = exc.message
        return self._render(
            request, "golive.html", who, rules=rules, rule=rule, start=start, end=end, result=result, error=error
        )

    @router.get("/console/campaigns")
    def console_campaigns(self, request: Request) -> HTMLResponse:
        who = self._who(request)
        return self._render(request, "campaigns.html", who, reports=reports(self.settings))

    @router.get("/console/campaigns/{name}/report.html")
    def console_campaign_report(self, request: Request, name: str) -> Response:
        self._who(request)
        found = {r["campaign"]: r for r in reports(self.settings)}
        if name not in found or not found[name]["html"]:
            return Response("not found", status_code=404)
        return FileResponse(found[name]["html"], media_type="text/html")


class Forbidden(Exception):
    """A console action the signed-in principal may not take (answered 403)."""


def reports(settings: Any) -> list[dict[str, Any]]:
    """The evaluation reports under ``<state_dir>/jobs/evaluate/<campaign>/`` (where
    ``esp job evaluate --data <state_dir>`` writes them): each campaign's lift figures."""
    import json

    root = Path(settings.state_dir) / "jobs" / "evaluate"
    found = []
    for summary in sorted(root.glob("*/summary.json")) if root.is_dir() else []:
        try:
            data = json.loads(summary.read_text())
        except (OSError, ValueError):
            continue
        html = summary.parent / "report.html"
        lifts = {k: v for k, v in data.items() if "lift" in k and not isinstance(v, (dict, list))}
        found.append(
            {
                "campaign": summary.parent.name,
                "html": str(html) if html.exists() else None,
                "lifts": lifts,
                "link": f"/console/campaigns/{quote(summary.parent.name)}/report.html",
            }
        )
    return found
