"""One BLE operation per adapter at a time, across processes: an exclusive `flock` on a lock
file per adapter (docs/design.md, "Concurrency and cleanup")."""

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


def _prepare_lock_file(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return _open_lock_file(path)


def _close_returned_fd(job: asyncio.Future[int]) -> None:
    if not job.cancelled() and job.exception() is None:
        os.close(job.result())


async def _open_off_the_loop(path: Path) -> int:
    """The lock file's fd, opened on a worker thread: a slow filesystem (an SD card, a hung
    mount under BLUEZ_JK_LOCK_DIR) must not stall every other device on the loop. The thread
    cannot be stopped, so a caller cancelled meanwhile leaves the fd to be closed when the
    thread hands it over."""
    job = asyncio.ensure_future(asyncio.to_thread(_prepare_lock_file, path))
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
        self.path = lock_path(adapter)
        self._fd: int | None = None

    async def __aenter__(self) -> AdapterLock:
        fd = await _open_off_the_loop(self.path)
        try:
            loop = asyncio.get_running_loop()
            give_up_at = loop.time() + self.timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if loop.time() >= give_up_at:
                        raise Busy(
                            f"adapter {self.adapter} is in use by another process "
                            f"(lock {self.path})",
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
