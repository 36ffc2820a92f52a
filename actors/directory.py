"""The partition directory the API is given: which actor holds a customer, and are they all live.

The HTTP layer never imports the actors (the layer contract in pyproject.toml); the platform
builds this object and passes it to the Serve deployment, which calls it through the
``serve.app.PartitionDirectory`` protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from actors.coordinator import Coordinator
from runtime.redis_client import connect
from runtime.settings import EspSettings


@dataclass(frozen=True)
class RayPartitionDirectory:
    """Answers from the coordinator's records in Redis; picklable (the connection is made in the
    replica, on first use)."""

    settings: dict[str, Any] = field(repr=False)  # EspSettings.to_wire(): secrets included

    @cached_property
    def _coordinator(self) -> Coordinator:
        settings = EspSettings(**self.settings)
        return Coordinator(settings, connect(settings.effective_redis_url()))

    def owner(self, customer: str) -> Any:
        """The handle of the partition actor holding ``customer``'s state."""
        return self._coordinator.owner(customer)

    def liveness(self, now_ms: int) -> tuple[int, int]:
        """(partition actors with a recent heartbeat, partition actors started)."""
        return self._coordinator.liveness(now_ms)
