"""Bad text that reached an audited write never makes the audit log unreadable."""

from __future__ import annotations

import orjson
import pytest
import redis

from runtime.errors import InputError
from runtime.policy.requests import campaign_requests
from runtime.security.audit import AuditLog
from runtime.security.tokens import Principal


def test_a_lone_surrogate_in_a_detail_is_stored_as_valid_unicode(redis_client: redis.Redis) -> None:
    audit = AuditLog(redis_client)
    audit.record(Principal("ops", "operator"), "campaign.submit", "campaign/x", detail={"run": "x\udfffy", "n": 1})
    audit.record(Principal("ops", "operator"), "campaign.submit", "campaign/y", detail={"run": "r-1", "n": 2})
    items = audit.list()["items"]
    assert [item["detail"]["run"] for item in items] == ["r-1", "x?y"]
    orjson.dumps(items)  # what the API answers: encodable, every string valid Unicode


@pytest.mark.parametrize(
    "body",
    [
        {"run": "x\udfffy", "contacts": []},
        {"run": "r", "contacts": [{"customer": "c\ud800", "channel": "sms", "template": "t"}]},
    ],
)
def test_a_campaign_run_or_customer_that_is_not_valid_unicode_is_refused(body: dict) -> None:
    with pytest.raises(InputError) as refused:
        campaign_requests("promo", body, now_ms=0)
    assert refused.value.reason == "invalid_contacts" and "valid Unicode" in str(refused.value)
