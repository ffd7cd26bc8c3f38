"""What the gateway remembers across restarts, under `state_dir`.

Runtime config overrides from `cmd/config` (per device name) and the Home Assistant discovery
topics published so far (so that entities of a removed device can be cleared after a restart).
Written atomically: a temporary file in the same directory, fsync, rename, fsync of the
directory, so that a power cut leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import Any

from bluez_jk.errors import ConfigError
from bluez_jk.gateway.config import parse_json, validate_overrides

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


def set_aside(path: Path, what: str, reason: str, *, keep: bool, then: str) -> str | None:
    """Rename the damaged file `what` to `<name>.damaged-<epoch>` (with `keep`, copy it
    there), so that what it held is never lost, and log it with `then` (what happens next).

    None when done, else why the file must not be overwritten (it could not be moved)."""
    aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
    try:
        if keep:
            shutil.copy2(path, aside)
        else:
            os.replace(path, aside)
    except OSError as err:
        unwritable = f"damaged {what} {path} could not be set aside ({err})"
        log.error("%s; it will not be overwritten", unwritable)  # noqa: TRY400
        return unwritable
    log.warning("%s damaged, kept as %s; %s reason=%s", what, aside, then, reason)
    return None


class StateUnwritable(OSError):
    """The state file exists but could not be read: writing would destroy what it holds."""


def valid_topic(topic: object) -> bool:
    """A topic the gateway itself could have published: no wildcards, no NUL or other control
    characters, valid UTF-8 (a lone surrogate is not), within MQTT's length limit."""
    if not isinstance(topic, str) or not topic or "+" in topic or "#" in topic:
        return False
    if topic.startswith("$") or any(unicodedata.category(ch) == "Cc" for ch in topic):
        return False
    try:
        return len(topic.encode("utf-8")) <= 65535
    except UnicodeEncodeError:
        return False


class StateStore:
    """The state file of one gateway; every change is written through at once."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATE_FILE
        self.overrides: dict[str, dict[str, Any]] = {}
        self.discovery: dict[str, list[str]] = {}
        # Per device, the config file's value each override replaced (see overrides.py).
        self.bases: dict[str, dict[str, Any]] = {}
        # Why the file must not be replaced (it exists but could not be read), else None.
        self.unwritable: str | None = None

    def load(self) -> None:
        """Read the file; a missing file is a first start, a damaged entry is dropped.

        A file that cannot be parsed is renamed aside (nothing is lost, the gateway starts
        from its config file); a file that cannot be read at all (permissions) is left alone
        and never overwritten."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as err:
            self.unwritable = f"state file {self.path} cannot be read ({err.strerror})"
            log.error(  # noqa: TRY400 - the cause is in the message, no traceback wanted
                "%s; runtime settings are not loaded and will not be saved until it is "
                "readable by the gateway's user (fix its owner or mode, or remove it)",
                self.unwritable,
            )
            return
        try:
            raw = parse_json(data, f"state file {self.path}", key="state")
        except ConfigError as err:
            self._set_aside(err.message)
            return
        if not isinstance(raw, dict):
            self._set_aside("the state file is not a JSON object")
            return
        dropped = False
        overrides = raw.get("overrides")
        for name, values in (overrides if isinstance(overrides, dict) else {}).items():
            try:
                self.overrides[str(name)] = validate_overrides(values)
            except (ConfigError, ValueError, RecursionError) as err:
                dropped = True
                log.warning("stored runtime config dropped device=%s reason=%s", name, err)
        bases = raw.get("bases")
        for name, values in (bases if isinstance(bases, dict) else {}).items():
            try:
                self.bases[str(name)] = validate_overrides(values)
            except (ConfigError, ValueError, RecursionError):
                dropped = True
                log.warning("stored override bases dropped device=%s", name)
        discovery = raw.get("discovery")
        for name, topics in (discovery if isinstance(discovery, dict) else {}).items():
            if isinstance(topics, list) and all(valid_topic(t) for t in topics):
                self.discovery[str(name)] = list(topics)
            else:
                dropped = True
                log.warning("stored discovery topics dropped device=%s (not valid topics)", name)
        if dropped and self._set_aside("some entries were invalid", keep=True):
            # The original is kept aside; rewrite the file with what was valid, or the same
            # copy would be made again at every start.
            try:
                self._write(self.overrides, self.discovery, self.bases)
            except OSError as err:
                log.warning("state file not rewritten path=%s error=%s", self.path, err)

    def _set_aside(self, reason: str, *, keep: bool = False) -> bool:
        kept = "valid entries kept" if keep else "no runtime settings loaded"
        then = f"{kept}; starting from the config file"
        self.unwritable = set_aside(self.path, "state file", reason, keep=keep, then=then)
        return self.unwritable is None

    def _write(
        self,
        overrides: dict[str, dict[str, Any]],
        discovery: dict[str, list[str]],
        bases: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """Persist first, then adopt: a failed write leaves memory and file as they were."""
        if self.unwritable is not None:
            raise StateUnwritable(errno.EACCES, f"{self.unwritable}; not overwriting it")
        bases = self.bases if bases is None else bases
        body = {"version": 1, "overrides": overrides, "discovery": discovery, "bases": bases}
        write_atomic(self.path, json.dumps(body, indent=1, sort_keys=True).encode())
        self.overrides, self.discovery, self.bases = overrides, discovery, bases

    def set_overrides(
        self, name: str, overrides: dict[str, Any], bases: dict[str, Any] | None = None
    ) -> None:
        """`bases`: the config file's value of each overridden key (kept as is when None)."""
        new_bases = dict(self.bases)
        if bases is not None:
            new_bases[name] = bases
        self._write({**self.overrides, name: overrides}, self.discovery, new_bases)

    def set_discovery(self, name: str, topics: list[str]) -> None:
        discovery = {k: v for k, v in self.discovery.items() if k != name}
        if topics:
            discovery[name] = sorted(topics)
        self._write(self.overrides, discovery)
