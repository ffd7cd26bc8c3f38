"""The per-adapter flock: exclusive across open files (as across processes), Busy after the
timeout, released on exit and on cancellation."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bluez_jk import adapter_lock
from bluez_jk.adapter_lock import AdapterLock, lock_path
from bluez_jk.errors import Busy


@pytest.fixture(autouse=True)
def _lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLUEZ_JK_LOCK_DIR", str(tmp_path))


async def test_second_holder_gets_busy_after_the_timeout(tmp_path: Path) -> None:
    assert lock_path("hci0") == tmp_path / "bluez-jk-hci0.lock"
    async with AdapterLock("hci0", timeout_s=1):
        started = time.monotonic()
        with pytest.raises(Busy) as info:
            async with AdapterLock("hci0", timeout_s=0.2):
                pass
        # Not before the timeout; the upper bound only rules out waiting for the holder (it
        # never lets go here), so a loaded machine's slow wake-up still passes.
        assert 0.15 < time.monotonic() - started < 5.0
        assert info.value.stage == "lock"
        async with AdapterLock("hci1", timeout_s=0.2):
            pass  # other adapters are independent


async def test_waiter_gets_the_lock_when_released() -> None:
    released = asyncio.Event()

    async def holder() -> None:
        async with AdapterLock("hci0", timeout_s=1):
            await released.wait()

    task = asyncio.create_task(holder())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    loop.call_later(0.1, released.set)
    async with AdapterLock("hci0", timeout_s=30):  # generous: it returns at the release
        pass
    await task


async def test_cancelled_waiter_leaves_no_fd_open() -> None:
    before = len(os.listdir("/proc/self/fd"))
    async with AdapterLock("hci0", timeout_s=1):
        waiter = asyncio.create_task(AdapterLock("hci0", timeout_s=5).__aenter__())
        await asyncio.sleep(0.1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert len(os.listdir("/proc/self/fd")) == before


async def test_lock_file_is_readable_by_everyone_whatever_the_umask() -> None:
    # The service runs with UMask=0077; jk-ble-read as another user must still open the file.
    old = os.umask(0o077)
    try:
        async with AdapterLock("hci0", timeout_s=1):
            pass
    finally:
        os.umask(old)
    assert lock_path("hci0").stat().st_mode & 0o777 == 0o644


async def test_an_existing_read_only_lock_file_still_locks() -> None:
    lock_path("hci0").write_bytes(b"")
    lock_path("hci0").chmod(0o444)
    async with AdapterLock("hci0", timeout_s=1):
        with pytest.raises(Busy):
            async with AdapterLock("hci0", timeout_s=0.1):
                pass


def test_the_group_only_directory_is_preferred(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 18, item 10: /run/bluez-jk (tmpfiles.d, group bluetooth) wins over /run/lock.
    monkeypatch.delenv("BLUEZ_JK_LOCK_DIR")
    preferred = tmp_path / "run-bluez-jk"
    monkeypatch.setattr(adapter_lock, "PREFERRED_LOCK_DIR", preferred)
    assert adapter_lock.lock_dir() != preferred  # absent: the fallback as before
    preferred.mkdir()
    assert lock_path("hci0") == preferred / "bluez-jk-hci0.lock"


async def test_the_lock_directory_is_looked_up_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without BLUEZ_JK_LOCK_DIR (as installed), lock_dir() stats /run/bluez-jk: the blocking
    # guard fails this test if that happens on the loop.
    monkeypatch.delenv("BLUEZ_JK_LOCK_DIR")
    preferred = tmp_path / "run-bluez-jk"
    preferred.mkdir()
    monkeypatch.setattr(adapter_lock, "PREFERRED_LOCK_DIR", preferred)
    lock = AdapterLock("hci0", timeout_s=1)
    async with lock:
        assert lock.path == preferred / "bluez-jk-hci0.lock"


async def test_busy_names_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "bluez-jk-hci0.lock"
    path.touch()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Busy) as info:
            async with AdapterLock("hci0", timeout_s=0.2):
                pass
        assert f"pid {holder.pid} python" in info.value.message
        assert ", user " in info.value.message
    finally:
        holder.kill()
        holder.wait()


HOLD = """
import fcntl, sys, time
f = open(sys.argv[1])
fcntl.flock(f, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


async def test_busy_names_the_holder_without_proc_locks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The gateway's unit hides /proc/locks (ProcSubset=pid): the holder's recorded pid it is.
    async with AdapterLock("hci0", timeout_s=1):
        assert (tmp_path / "bluez-jk-hci0.lock").read_text() == f"{os.getpid()}\n"
        real_read_text = Path.read_text

        def no_proc_locks(self: Path, *args: object, **kwargs: object) -> str:
            if str(self) == "/proc/locks":
                raise FileNotFoundError(2, "No such file or directory")
            return real_read_text(self, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(Path, "read_text", no_proc_locks)
        with pytest.raises(Busy) as info:
            async with AdapterLock("hci0", timeout_s=0.1):
                pass
        assert f"pid {os.getpid()} by the lock file" in info.value.message


@pytest.mark.parametrize("before", ["1\n", f"{os.getpid()}7\n", "", f"{os.getpid()}\n"])
async def test_the_lock_file_names_this_process_whatever_it_said_before(
    tmp_path: Path, before: str
) -> None:
    # A file that already names us is left alone (no write per read); anything else, a longer
    # pid that starts with ours included, is replaced.
    lock_file = tmp_path / "bluez-jk-hci0.lock"
    lock_file.write_text(before)
    for _ in range(2):
        async with AdapterLock("hci0", timeout_s=1):
            assert lock_file.read_text() == f"{os.getpid()}\n"


async def test_a_lock_file_whose_mode_cannot_be_set_still_locks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock directory on a filesystem that refuses chmod (a 9p share answered EPERM to the
    unprivileged gateway creating the file): the lock is taken all the same."""

    def refuse(_fd: int, _mode: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(adapter_lock.os, "fchmod", refuse)
    assert not lock_path("hci7").exists()
    async with AdapterLock("hci7", timeout_s=1) as held:
        assert held.path == lock_path("hci7")
        assert lock_path("hci7").exists()
        with pytest.raises(Busy):
            async with AdapterLock("hci7", timeout_s=0.2):
                pass
