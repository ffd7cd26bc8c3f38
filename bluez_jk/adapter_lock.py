"""One BLE operation per adapter at a time, across processes: an exclusive `flock` on a lock
file per adapter (DESIGN.md, "Concurrency and cleanup")."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import tempfile
from pathlib import Path
from types import TracebackType

from bluez_jk.errors import Busy

log = logging.getLogger(__name__)

_POLL_S = 0.05


def lock_dir() -> Path:
    override = os.environ.get("BLUEZ_JK_LOCK_DIR")
    if override:
        return Path(override)
    run_lock = Path("/run/lock")
    if run_lock.is_dir() and os.access(run_lock, os.W_OK):
        return run_lock
    return Path(tempfile.gettempdir())


def lock_path(adapter: str) -> Path:
    return lock_dir() / f"bluez-jk-{adapter}.lock"


def _open_lock_file(path: Path) -> int:
    """A read-only fd on the lock file, which is all flock needs.

    The gateway (a systemd service with UMask=0077) and jk-ble-read (any user in group
    bluetooth) share these files in the sticky, world-writable /run/lock. There an O_CREAT open
    of another user's file is refused under fs.protected_regular (systemd's default) whatever
    its mode, so an existing file is opened without O_CREAT, and a new one is made readable for
    everyone regardless of the creator's umask."""
    while True:
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            pass
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            continue  # another process created it between the two opens
        os.fchmod(fd, 0o644)
        return fd


def lock_holder(path: Path) -> str | None:
    """Who holds the flock on `path`, as "pid N: command line", from /proc/locks (Linux);
    None when nobody does or it cannot be told (another mount namespace, hidden /proc)."""
    try:
        st = path.stat()
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    # /proc/locks names the file as MAJOR:MINOR:INODE, the device numbers in hex.
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF" (blocked waiters start with "->")
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK" or "->" in fields:
            continue
        pid, device_inode = fields[4], fields[5]
        if device_inode != wanted:
            continue
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return f"pid {pid}"
        command = " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
        return f"pid {pid}: {command[:120]}" if command else f"pid {pid}"
    return None


class AdapterLock:
    """`async with AdapterLock("hci0", timeout_s=5):` - raises `Busy` after `timeout_s`.

    flock has no async form; polling with LOCK_NB keeps the event loop free and lets
    cancellation in at once. The lock dies with the process, so a crash never leaves it held."""

    def __init__(self, adapter: str, timeout_s: float) -> None:
        self.adapter = adapter
        self.timeout_s = timeout_s
        self.path = lock_path(adapter)
        self._fd: int | None = None

    async def __aenter__(self) -> AdapterLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = _open_lock_file(self.path)
        try:
            loop = asyncio.get_running_loop()
            give_up_at = loop.time() + self.timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if loop.time() >= give_up_at:
                        holder = lock_holder(self.path)
                        raise Busy(
                            f"adapter {self.adapter} is in use by another process"
                            f"{f' ({holder})' if holder else ''} (lock {self.path}): while "
                            "the gateway runs, ask it instead (jk-ble-read --via-mqtt)",
                            stage="lock",
                        ) from None
                    await asyncio.sleep(_POLL_S)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        log.debug("lock acquired adapter=%s path=%s", self.adapter, self.path)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
