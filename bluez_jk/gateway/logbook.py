"""What the gateway has seen of one BMS's event log, kept under `state_dir` across restarts.

One file per device, `logbook-<name>.json`. An entry is identified by its BMS time and code,
`(t, code)`: the BMS answers 0xA1 with its latest entries every time (docs/protocol.md 5.6), so
the same event comes back read after read and is stored once. The file keeps at most
MAX_ENTRIES, the first seen dropped first; the BMS itself holds 50, so an event still on the
BMS is never dropped and seen again as new.

Blocking file I/O: the gateway calls `load` and `merge` on a worker thread. Written
atomically like the state file (state.py); a damaged file is renamed aside (nothing is lost)
and the device starts with an empty logbook; a file that cannot be read at all is never
overwritten.
"""

from __future__ import annotations

import errno
import json
import logging
import re
import time
from pathlib import Path
from typing import Any, TypedDict, TypeGuard

from bluez_jk.gateway.state import set_aside, write_atomic
from bluez_jk.reading import LogbookEntry

log = logging.getLogger(__name__)

MAX_ENTRIES = 1000
FILE_VERSION = 1
_U32 = 2**32
_EVENT_RE = re.compile(r"[a-z0-9_]{1,64}")


class StoredEntry(TypedDict):
    t: int  # the BMS's seconds counter at the event
    code: int  # docs/protocol.md appendix B
    event: str | None  # the code's name, as the reader gave it
    seen: float  # epoch seconds when this gateway first read it


def _entry(raw: Any) -> StoredEntry | None:
    """A stored entry from the file, or None when it is not one."""
    if not isinstance(raw, dict):
        return None
    t, code, seen = raw.get("t"), raw.get("code"), raw.get("seen")
    event = raw.get("event")
    if not (_is_int(t) and _is_int(code) and (_is_int(seen) or isinstance(seen, float))):
        return None
    if not (0 <= t < _U32 and 1 <= code <= 255 and 0 <= seen < 1e11):
        return None
    if not (event is None or (isinstance(event, str) and _EVENT_RE.fullmatch(event))):
        return None
    return {"t": t, "code": code, "event": event, "seen": float(seen)}


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


class LogbookUnwritable(OSError):
    """The file exists but could not be read: writing would destroy what it holds."""


class LogbookStore:
    """The logbook of one device; every change is written through at once."""

    def __init__(self, state_dir: Path, name: str, max_entries: int = MAX_ENTRIES) -> None:
        self.path = state_dir / f"logbook-{name}.json"
        self.name = name
        self.max_entries = max_entries
        self.entries: list[StoredEntry] = []
        self.last_read: float | None = None  # epoch of the last read that got the logbook
        self.unwritable: str | None = None

    def load(self) -> None:
        """Read the file; missing is empty, damaged is set aside, unreadable is left alone."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as err:
            self.unwritable = f"logbook file {self.path} cannot be read ({err.strerror})"
            log.error(  # noqa: TRY400 - the cause is in the message
                "%s; the logbook of device=%s is not kept until the file is readable by "
                "the gateway's user (fix its owner or mode, or remove it)",
                self.unwritable,
                self.name,
            )
            return
        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            self._set_aside("not valid JSON")
            return
        items = raw.get("entries") if isinstance(raw, dict) else None
        if not isinstance(items, list):
            self._set_aside("not a logbook file (no entries array)")
            return
        found = [_entry(item) for item in items]
        entries = [e for e in found if e is not None]
        last = raw.get("last_read")
        if (_is_int(last) or isinstance(last, float)) and 0 <= last < 1e11:
            self.last_read = float(last)
        self.entries = self._unique(entries)[-self.max_entries :]
        if len(self.entries) != len(items) and self._set_aside("invalid entries", keep=True):
            # The original is kept aside; rewrite it with what was valid, or the same copy
            # would be made at every start.
            try:
                self._write(self.entries, self.last_read)
            except OSError as err:
                log.warning("logbook file not rewritten path=%s error=%s", self.path, err)

    @staticmethod
    def _unique(entries: list[StoredEntry]) -> list[StoredEntry]:
        seen: set[tuple[int, int]] = set()
        unique = []
        for entry in entries:
            key = (entry["t"], entry["code"])
            if key not in seen:
                seen.add(key)
                unique.append(entry)
        return unique

    def _set_aside(self, reason: str, *, keep: bool = False) -> bool:
        kept = "valid entries kept" if keep else "starting with an empty logbook"
        then = f"{kept} device={self.name}"
        self.unwritable = set_aside(self.path, "logbook file", reason, keep=keep, then=then)
        return self.unwritable is None

    def merge(self, entries: list[LogbookEntry], now: float | None = None) -> list[StoredEntry]:
        """Add the entries not seen before and persist; returns them, in the BMS's order.

        Persist first, then adopt: a failed write raises and leaves memory as it was, so
        the same entries count as new at the next read."""
        now = time.time() if now is None else now
        known = {(e["t"], e["code"]) for e in self.entries}
        new: list[StoredEntry] = []
        for entry in entries:
            key = (int(entry["t"]), int(entry["code"]))
            if key not in known:
                known.add(key)
                new.append({"t": key[0], "code": key[1], "event": entry["event"], "seen": now})
        kept = [*self.entries, *new][-self.max_entries :]
        self._write(kept, now)
        self.entries, self.last_read = kept, now
        return new

    def _write(self, entries: list[StoredEntry], last_read: float | None) -> None:
        if self.unwritable is not None:
            raise LogbookUnwritable(errno.EACCES, f"{self.unwritable}; not overwriting it")
        body = {
            "version": FILE_VERSION,
            "device": self.name,
            "last_read": last_read,
            "entries": entries,
        }
        write_atomic(self.path, json.dumps(body, indent=1).encode())
