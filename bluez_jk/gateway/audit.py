"""The audit trail of writes: one JSON line per accepted, refused or failed write request.

Kept in `state_dir/audit.jsonl`, bounded: when a line would take the file past `max_bytes` it
is renamed to `audit.jsonl.1` (older copies shift up to `.N`, the oldest is dropped), so the
trail never takes more than (keep + 1) x max_bytes. A line about a write that went out is
fsynced: it must leave its trace even if the power goes right after. Refusals are appended
without fsync, so that a flood of bad requests cannot stall the gateway on a slow SD card.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.jsonl"
MAX_BYTES = 256 * 1024
KEEP = 3


def utc_timestamp(epoch: float | None = None) -> str:
    """ISO 8601 in UTC with milliseconds: `2026-11-29T15:04:05.123Z`."""
    now = time.time() if epoch is None else epoch
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def audit_line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), sort_keys=False, default=str).encode() + b"\n"


class AuditLog:
    def __init__(self, state_dir: Path, *, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> None:
        self.path = state_dir / AUDIT_FILE
        self.max_bytes = max_bytes
        self.keep = keep

    def append(self, record: dict[str, Any], *, durable: bool = True) -> bool:
        """Add one record (fsynced when `durable`); False (and a warning) when the file
        cannot be written."""
        line = audit_line(record)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._rotate_for(len(line))
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            try:
                os.write(fd, line)
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as err:
            log.warning("audit line not written path=%s error=%s", self.path, err)
            return False
        return True

    def _rotate_for(self, size: int) -> None:
        try:
            current = self.path.stat().st_size
        except FileNotFoundError:
            return
        if current + size <= self.max_bytes:
            return
        for index in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{AUDIT_FILE}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{AUDIT_FILE}.{index + 1}"))
        if self.keep > 0:
            os.replace(self.path, self.path.with_name(f"{AUDIT_FILE}.1"))
        else:
            self.path.unlink()

    def files(self) -> list[Path]:
        """The current file and its rotated copies that exist, newest first."""
        names = [self.path, *(self.path.with_name(f"{AUDIT_FILE}.{i}") for i in range(1, 99))]
        return [p for p in names if p.exists()]
