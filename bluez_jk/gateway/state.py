"""What the gateway remembers across restarts, under `state_dir`.

Runtime config overrides from `cmd/config` (per device name) and the Home Assistant discovery
topics published so far (so that entities of a removed device can be cleared after a restart).
Written atomically: a temporary file in the same directory, fsync, rename, fsync of the
directory, so that a power cut leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from bluez_jk.errors import ConfigError
from bluez_jk.gateway.config import validate_overrides

log = logging.getLogger(__name__)

STATE_FILE = "gateway_state.json"


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class StateStore:
    """The state file of one gateway; every change is written through at once."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATE_FILE
        self.overrides: dict[str, dict[str, Any]] = {}
        self.discovery: dict[str, list[str]] = {}

    def load(self) -> None:
        """Read the file; a missing file is a first start, a damaged entry is dropped."""
        try:
            raw = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as err:
            log.warning("state file unreadable, starting fresh path=%s error=%s", self.path, err)
            return
        if not isinstance(raw, dict):
            log.warning("state file is not an object, ignored path=%s", self.path)
            return
        overrides = raw.get("overrides")
        for name, values in (overrides if isinstance(overrides, dict) else {}).items():
            try:
                self.overrides[str(name)] = validate_overrides(values)
            except ConfigError as err:
                log.warning("stored runtime config dropped device=%s reason=%s", name, err)
        discovery = raw.get("discovery")
        for name, topics in (discovery if isinstance(discovery, dict) else {}).items():
            if isinstance(topics, list) and all(isinstance(t, str) for t in topics):
                self.discovery[str(name)] = list(topics)

    def _write(self, overrides: dict[str, dict[str, Any]], discovery: dict[str, list[str]]) -> None:
        """Persist first, then adopt: a failed write leaves memory and file as they were."""
        body = {"version": 1, "overrides": overrides, "discovery": discovery}
        write_atomic(self.path, json.dumps(body, indent=1, sort_keys=True).encode())
        self.overrides, self.discovery = overrides, discovery

    def set_overrides(self, name: str, overrides: dict[str, Any]) -> None:
        self._write({**self.overrides, name: overrides}, self.discovery)

    def set_discovery(self, name: str, topics: list[str]) -> None:
        discovery = {k: v for k, v in self.discovery.items() if k != name}
        if topics:
            discovery[name] = sorted(topics)
        self._write(self.overrides, discovery)
