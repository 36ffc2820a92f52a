"""Request bodies of the contact-policy endpoints, validated: opt-out lists and a batch
campaign's contacts."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from runtime.config.types import NAME_PATTERN
from runtime.errors import InputError
from runtime.events.envelope import format_time_ms
from runtime.events.limits import string_problem
from runtime.subscriptions.outbox import Publication

MAX_CONTACTS = 100_000


def optout_pairs(entries: Any) -> list[tuple[str, str]]:
    """``[{"customer": "c1", "channel": "sms"}, {"customer": "c2"}]`` (no channel: all)."""
    if not isinstance(entries, list):
        raise InputError("expected a JSON array of {customer, channel?}", reason="invalid_optouts")
    pairs = []
    for index, entry in enumerate(entries):
        customer = entry.get("customer") if isinstance(entry, dict) else None
        channel = entry.get("channel", "*") if isinstance(entry, dict) else None
        if not isinstance(customer, str) or not customer:
            raise InputError(f"item {index}: 'customer' must be a non-empty string", reason="invalid_optouts")
        if not isinstance(channel, str) or not (channel == "*" or re.match(NAME_PATTERN, channel)):
            raise InputError(f"item {index}: 'channel' must be a channel name or '*'", reason="invalid_optouts")
        pairs.append((customer, channel))
    return pairs


def campaign_requests(campaign: str, body: Any, *, now_ms: int) -> list[Publication]:
    """``{"run": "2026-11-23", "contacts": [{"customer", "channel", "template", "priority"?}]}`` as
    notify requests of the campaign, with ids deterministic per run."""
    if not isinstance(body, dict) or not isinstance(body.get("contacts"), list):
        raise InputError("expected {run, contacts: [{customer, channel, template}]}", reason="invalid_contacts")
    run = body.get("run")
    if not isinstance(run, str) or not run or string_problem(run, 128) is not None:
        raise InputError(
            "'run' must name this run of the campaign (1-128 characters of valid Unicode)", reason="invalid_contacts"
        )
    contacts = body["contacts"]
    if len(contacts) > MAX_CONTACTS:
        raise InputError(f"at most {MAX_CONTACTS} contacts per request", reason="too_many_contacts")
    publications = []
    for index, contact in enumerate(contacts):
        if not isinstance(contact, dict):
            raise InputError(f"contact {index}: expected an object", reason="invalid_contacts")
        customer, channel, template = contact.get("customer"), contact.get("channel"), contact.get("template")
        priority = contact.get("priority", 50)
        if not isinstance(customer, str) or not customer or string_problem(customer) is not None:
            raise InputError(
                f"contact {index}: 'customer' must be a non-empty string of valid Unicode", reason="invalid_contacts"
            )
        for name, value in (("channel", channel), ("template", template)):
            if not isinstance(value, str) or not re.match(NAME_PATTERN, value):
                raise InputError(f"contact {index}: '{name}' must match {NAME_PATTERN}", reason="invalid_contacts")
        if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 100:
            raise InputError(f"contact {index}: 'priority' must be 0..100", reason="invalid_contacts")
        key = "\x1f".join([campaign, run, customer, str(channel), str(template)])
        request_id = hashlib.sha256(key.encode()).hexdigest()[:32]
        topic = f"notifications.{channel}"
        notify = {"channel": channel, "template": template, "campaign": campaign, "priority": priority}
        event = {
            "specversion": "1.0",
            "id": request_id,
            "source": f"esp/campaign/{campaign}",
            "type": topic,
            "time": format_time_ms(now_ms),
            "subject": customer,
            "data": {"campaign_run": run, "notify": notify},
        }
        publications.append(Publication(request_id, topic, event))
    return publications
