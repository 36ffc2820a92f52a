"""Issue 15, check (c): ESP unchanged on a Redis Cluster. The whole platform runs on a local
3-master Redis Cluster (``redis-server --cluster-enabled yes`` ×3, slots assigned by
``redis-cli --cluster create``): tests of the other end-to-end modules run here again, through
the public API only. The chaos cases are in ``test_redis_cluster_chaos.py``."""

from __future__ import annotations

from tests.e2e.test_api import test_pull_ack_and_redelivery_over_http  # noqa: F401
from tests.e2e.test_concurrent_senders import test_concurrent_senders_get_exactly_the_ordered_streams_matches  # noqa: F401
from tests.e2e.test_delivery_http import (  # noqa: F401
    bare,
    http,
    test_sse_resumes_after_last_event_id_without_gap_or_duplicate,
    test_webhook_delivers_each_business_event_once_signed,
)
from tests.e2e.test_ingest_http import test_bad_events_cost_nothing_and_retries_change_nothing  # noqa: F401
from tests.e2e.test_rules import test_tag_and_task_actions, test_why_shows_what_holds_and_what_is_missing  # noqa: F401
from tests.e2e.test_sources import (  # noqa: F401
    test_quarantine_then_fix_the_mapping_then_replay_processes_once,
    test_trace_shows_where_each_event_went,
)

REDIS_CLUSTER = 3  # the module's platform (conftest) runs on a local cluster of this many masters
