"""One BLE operation per adapter at a time, across processes: an exclusive `flock` on a lock
file per adapter (docs/design.md, "Concurrency and cleanup")."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import pwd
import tempfile
from pathlib import Path
from types import TracebackType

from bluez_jk.errors import Busy

log = logging.getLogger(__name__)

_POLL_S = 0.05


# Created at boot by systemd/bluez-jk.tmpfiles.conf: writable by group bluetooth only (and
# sticky), so that no other local user can create and hold our lock files. World-writable
# /run/lock, where anyone can, is the fallback where that directory does not exist.
PREFERRED_LOCK_DIR = Path("/run/bluez-jk")


def lock_dir() -> Path:
    override = os.environ.get("BLUEZ_JK_LOCK_DIR")
    if override:
        return Path(override)
    # Taken whenever it exists, writable or not: every process must pick the same directory
    # or they would not exclude each other (an existing lock file opens without write access).
    if PREFERRED_LOCK_DIR.is_dir():
        return PREFERRED_LOCK_DIR
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
        # Only a courtesy to readers of other users: a filesystem that refuses it (seen: a 9p
        # share, EPERM for a non-root owner) must not cost a read; flock needs no mode.
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o644)
        return fd


def lock_holder(fd: int) -> str:
    """Who holds the flock on the file open as `fd`, from /proc/locks ("pid 123 jk-ble-read,
    user pi; "), or "" where that cannot be told. A lock held by another user is the one
    case where a user has to ask or act, so the message names them."""
    st = os.fstat(fd)
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 12345 fe:00:2147442 0 EOF"; waiters carry a "->" field.
        if len(fields) < 6 or fields[1] != "FLOCK" or "->" in fields[:2] or fields[5] != wanted:
            continue
        pid = fields[4]
        return f"pid {pid}{_process_owner(pid)}; "
    # No /proc/locks (the gateway's unit has ProcSubset=pid): the pid the last holder wrote.
    with contextlib.suppress(OSError, UnicodeDecodeError, ValueError):
        recorded = int(os.pread(fd, 32, 0).decode("ascii").strip())
        return f"pid {recorded} by the lock file; "
    return ""


def _record_holder(path: Path, lock_fd: int) -> None:
    """Write our pid into the lock file for `lock_holder` (only where we may: the file may
    belong to another user; the lock itself never depends on this). Nothing is written when the
    file already names us (the last holder was this process): one read instead of an open, a
    truncate, a write and a close for every read of a gateway."""
    mine = f"{os.getpid()}\n".encode()
    with contextlib.suppress(OSError):
        if os.pread(lock_fd, len(mine) + 1, 0) == mine:
            return
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, mine, 0)
        finally:
            os.close(fd)


def _holder_of_own_fd(fd: int) -> str:
    try:
        return lock_holder(fd)
    finally:
        os.close(fd)


async def _holder_off_the_loop(fd: int) -> str:
    """`lock_holder` on a worker thread (/proc/locks and /proc/PID are files). The thread gets
    its own duplicate of `fd`, so a caller cancelled meanwhile may close its fd at once without
    the thread reading whatever file reuses that number."""
    return await asyncio.to_thread(_holder_of_own_fd, os.dup(fd))


def _process_owner(pid: str) -> str:
    text = ""
    with contextlib.suppress(OSError):
        text += " " + Path(f"/proc/{pid}/comm").read_text().strip()
    with contextlib.suppress(OSError, KeyError):
        text += ", user " + pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
    return text


def _prepare_lock_file(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return _open_lock_file(path)


def _open_and_try_lock(adapter: str) -> tuple[Path, int, bool]:
    """The lock file's path, an fd on it, and whether the lock was free and is now ours (then
    with our pid recorded in the file): everything a free lock needs in one worker-thread hop,
    since every read takes it once."""
    path = lock_path(adapter)
    fd = _prepare_lock_file(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return path, fd, False
    except BaseException:
        os.close(fd)
        raise
    _record_holder(path, fd)
    return path, fd, True


def _close_returned_fd(job: asyncio.Future[tuple[Path, int, bool]]) -> None:
    if not job.cancelled() and job.exception() is None:
        os.close(job.result()[1])  # closing it also releases a lock it took


async def _open_off_the_loop(adapter: str) -> tuple[Path, int, bool]:
    """`_open_and_try_lock` on a worker thread: a slow filesystem (an SD card, a hung mount
    under BLUEZ_JK_LOCK_DIR) must not stall every other device on the loop. The thread cannot
    be stopped, so a caller cancelled meanwhile leaves the fd to be closed when the thread
    hands it over."""
    job = asyncio.ensure_future(asyncio.to_thread(_open_and_try_lock, adapter))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        job.add_done_callback(_close_returned_fd)
        raise


class AdapterLock:
    """`async with AdapterLock("hci0", timeout_s=5):` - raises `Busy` after `timeout_s`.

    flock has no async form; polling with LOCK_NB keeps the event loop free and lets
    cancellation in at once. The lock dies with the process, so a crash never leaves it held."""

    def __init__(self, adapter: str, timeout_s: float) -> None:
        self.adapter = adapter
        self.timeout_s = timeout_s
        # Chosen on entry, on a worker thread: lock_dir() looks at the disk.
        self.path: Path | None = None
        self._fd: int | None = None

    async def __aenter__(self) -> AdapterLock:
        path, fd, locked = await _open_off_the_loop(self.adapter)
        self.path = path
        try:
            loop = asyncio.get_running_loop()
            give_up_at = loop.time() + self.timeout_s
            while not locked:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if loop.time() >= give_up_at:
                        holder = await _holder_off_the_loop(fd)
                        raise Busy(
                            f"adapter {self.adapter} is in use by another process "
                            f"({holder}lock {path}): while the gateway runs, "
                            "ask it instead (jk-ble-read --via-mqtt)",
                            stage="lock",
                        ) from None
                    await asyncio.sleep(_POLL_S)
                    continue
                locked = True
                self._fd = fd
                # A write to the lock file: on a worker thread like its open.
                await asyncio.to_thread(_record_holder, path, fd)
        except BaseException:
            if self._fd is not None:
                await self.__aexit__(None, None, None)
            else:
                os.close(fd)
            raise
        self._fd = fd
        log.debug("lock acquired adapter=%s path=%s", self.adapter, path)
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
