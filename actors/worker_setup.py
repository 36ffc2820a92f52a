"""What each Ray worker process of ESP's job runs before its first task (Ray's
``worker_process_setup_hook``, set in the job's runtime environment by ``Platform``).

Ray registers its Arrow serializers (for Ray Data) in every worker when it first serializes
anything, and importing pyarrow to do so brings pyarrow and numpy into every process: about
35 MB of resident memory in each of ESP's partition actors, dispatchers and policy stage (25 in
Serve's processes, which import numpy themselves), none of which passes Arrow data through Ray.
:func:`setup` lets that registration happen only in a process that has imported pyarrow itself
(Arrow ingestion in the API replica, the batch jobs), so the rest stay lean. A Ray without the
hook point is left as it is (``tests/e2e/test_ingest_http.py`` checks that the stream actors stay
lean).
"""

from __future__ import annotations

import sys
from typing import Any

HOOK = "actors.worker_setup.setup"


def runtime_env() -> dict[str, Any]:
    """The runtime environment of ESP's job, for every ``ray.init`` of it: a new dict at each
    call, as ``ray.init`` adds its own keys to the one it is given."""
    return {"worker_process_setup_hook": HOOK}


def setup() -> None:
    try:
        from ray._private import arrow_serialization
    except ImportError:  # a Ray without it: nothing to defer
        return
    register = getattr(arrow_serialization, "_register_custom_datasets_serializers", None)
    if register is None or getattr(register, "esp_deferred", False):
        return

    def only_where_imported(context: Any) -> None:
        if "pyarrow" in sys.modules:
            register(context)

    only_where_imported.esp_deferred = True  # type: ignore[attr-defined]
    arrow_serialization._register_custom_datasets_serializers = only_where_imported
