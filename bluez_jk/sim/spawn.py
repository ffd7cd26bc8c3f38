"""A private dbus-daemon on a unix socket in a temporary directory (never the system bus)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1

# Permissive on purpose: a test bus where the simulator owns org.bluez and any local client
# may call it. Generous limits so that a burst of notifications never stalls a reader.
_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
  <limit name="max_incoming_bytes">1000000000</limit>
  <limit name="max_outgoing_bytes">1000000000</limit>
  <limit name="max_message_size">1000000000</limit>
  <limit name="max_connections_per_user">10000</limit>
  <limit name="max_match_rules_per_connection">50000</limit>
  <limit name="max_replies_per_connection">50000</limit>
</busconfig>
"""


def _die_with_parent() -> None:
    # If the simulator is killed outright, the kernel takes its dbus-daemon along.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class PrivateBus:
    """`with PrivateBus() as bus:` starts dbus-daemon; leaving stops it and removes its dir."""

    def __init__(
        self,
        startup_timeout_s: float = 10.0,
        socket_dir: Path | None = None,
        die_with_parent: bool = False,
    ) -> None:
        """`socket_dir` keeps the address stable across restarts; its owner removes it.

        `die_with_parent`: the kernel stops the daemon when the *thread* that started it ends,
        so only a process's main thread (the CLI) should ask for it.
        """
        self._timeout_s = startup_timeout_s
        self._die_with_parent = die_with_parent
        self._own_dir = socket_dir is None
        self._socket_dir = socket_dir
        self.workdir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.address = ""

    def __enter__(self) -> PrivateBus:
        binary = shutil.which("dbus-daemon")
        if binary is None:
            raise FileNotFoundError("dbus-daemon is not installed")
        if self._socket_dir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="bluez-jk-sim-"))
        else:
            self.workdir = self._socket_dir
            self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            config = self.workdir / "bus.conf"
            config.write_text(_CONFIG.format(socket=self.workdir / "bus"))
            errors = self.workdir / "dbus-daemon.log"
            with errors.open("wb") as stderr:
                # Its stderr goes to a file: as root it warns about fd limits on every start.
                self.proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                    [
                        binary,
                        f"--config-file={config}",
                        "--nofork",
                        "--nopidfile",
                        "--print-address=1",
                    ],
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    stdin=subprocess.DEVNULL,
                    # only prctl in the child, no locks or I/O
                    preexec_fn=_die_with_parent if self._die_with_parent else None,  # noqa: PLW1509
                )
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline().decode().strip()
            if not line:
                self._failed(errors.read_text(errors="replace"))
            # Keep only the path: the guid changes nothing for clients and is noise in logs.
            self.address = line.split(",guid=")[0]
        except BaseException:
            self.close()
            raise
        return self

    def _failed(self, log_text: str) -> None:
        code = self.proc.wait(self._timeout_s) if self.proc is not None else None
        raise RuntimeError(f"dbus-daemon exited with {code}: {log_text.strip()}")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        # A second Ctrl-C or a SIGTERM arriving while we stop the daemon (a shell sends SIGINT
        # to the whole process group, then its trap sends SIGTERM) must not cut the cleanup
        # short and leave the directory behind: hold them until it is done.
        blocked = {signal.SIGINT, signal.SIGTERM}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            self._close()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def _close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None
        if self.workdir is not None:
            if self._own_dir:
                with contextlib.suppress(FileNotFoundError):
                    shutil.rmtree(self.workdir)
            else:
                for name in ("bus", "bus.conf", "dbus-daemon.log"):
                    (self.workdir / name).unlink(missing_ok=True)
            self.workdir = None
