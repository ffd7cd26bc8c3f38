"""What happened, with timestamps: the evidence tests read through the control interface."""

from __future__ import annotations

import json
import time
from typing import Any

_MAX_EVENTS = 20_000


class EventLog:
    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []

    def record(
        self, event: str, address: str | None = None, adapter: str | None = None, **extra: Any
    ) -> None:
        entry: dict[str, Any] = {"t": time.time(), "event": event}
        if address is not None:
            entry["address"] = address
        if adapter is not None:
            entry["adapter"] = adapter
        entry.update(extra)
        self._events.append(entry)
        if len(self._events) > _MAX_EVENTS:
            del self._events[: len(self._events) - _MAX_EVENTS]

    def count(self) -> int:
        return len(self._events)

    def to_json(self) -> str:
        return json.dumps(self._events)

    def clear(self) -> None:
        self._events.clear()
