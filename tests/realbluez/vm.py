"""Boots Debian's kernel under QEMU (virtme-ng) and runs `guest.py` there, once per test run.

The VM shares the host's root filesystem read-only (so it sees this checkout and its .venv)
and gets one writable work directory for results and logs. KVM is used when a KVM guest
actually boots (on some machines /dev/kvm exists but the guest hangs after the boot loader:
then TCG, which boots in ~20 s on 2 cores). The verdict of the KVM probe is cached per kernel
and QEMU so that a machine pays for a hanging probe once.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
KVM_PROBE_S = 40.0


def deadline_s() -> float:
    """How long the whole VM run may take before it counts as hung and is stopped
    (REALBLUEZ_DEADLINE_S, default 2400). Only a guard against a hang, so far over the run's
    own time: 12-15 minutes on 2 cores, 25 minutes beside the rest of the suite and a CPU hog
    (1500 s were hit there once, the 100 consecutive reads taking 929 s)."""
    return float(os.environ.get("REALBLUEZ_DEADLINE_S", "2400"))


CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bluez-jk"


@dataclass
class Run:
    work: Path
    accel: str
    boot_s: float | None = None
    total_s: float = 0.0
    exit_code: int | None = None
    complete: bool = False
    outcomes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def console(self) -> str:
        path = self.work / "console.log"
        return path.read_text(errors="replace") if path.exists() else ""


def missing_prerequisites() -> list[str]:
    """What this host lacks to run the tier (empty: it can)."""
    missing = []
    if os.uname().machine != "x86_64":
        return [
            f"an x86-64 host (this is {os.uname().machine}): the tier boots Debian's amd64 kernel"
        ]
    if not shutil.which("qemu-system-x86_64"):
        missing.append("qemu-system-x86_64 (apt: qemu-system-x86)")
    if not kernel():
        missing.append("a kernel image in /boot (apt: linux-image-amd64)")
    if not shutil.which("busybox"):
        # virtme-ng builds the initramfs that loads Debian's 9p/virtio modules from a static
        # busybox.
        missing.append("busybox (apt: busybox-static)")
    if not Path("/usr/libexec/bluetooth/bluetoothd").exists():
        missing.append("bluetoothd (apt: bluez)")
    if not vng():
        missing.append("vng (pip: virtme-ng, the realbluez extra)")
    if importlib.util.find_spec("bumble") is None:
        missing.append("bumble (pip: the realbluez extra)")
    if os.geteuid() != 0 and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        # Not required (TCG works without), noted for the reason of a slow run only.
        pass
    return missing


def kernel() -> str | None:
    images = sorted(Path("/boot").glob("vmlinuz-*"), key=lambda p: _version_key(p.name))
    return str(images[-1]) if images else None


def _version_key(name: str) -> list[Any]:
    parts: list[Any] = []
    for piece in name.replace("-", ".").split("."):
        parts.append((0, int(piece)) if piece.isdigit() else (1, piece))
    return parts


def vng() -> str | None:
    here = Path(sys.executable).parent / "vng"
    return str(here) if here.exists() else shutil.which("vng")


def _command(work: Path, accel: str, env: dict[str, str]) -> list[str]:
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    inner = (
        f"cd {REPO} && env PYTHONDONTWRITEBYTECODE=1 {exports} "
        f"{sys.executable} -m tests.realbluez.guest {work}"
    )
    cmd = [vng() or "vng", "-r", kernel() or "", "--memory", "2G", "--cpus", "2"]
    if accel == "tcg":
        cmd.append("--disable-kvm")
    return [*cmd, "--rwdir", str(work), "--exec", inner]


def _kvm_verdict_path() -> Path:
    qemu = subprocess.run(
        ["qemu-system-x86_64", "--version"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split("\n")[0]
    key = f"{Path(kernel() or '').name}-{qemu}".replace(" ", "_").replace("/", "_")
    return CACHE / f"kvm-{key}.json"


def choose_accel() -> str:
    forced = os.environ.get("REALBLUEZ_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    verdict = _kvm_verdict_path()
    if verdict.exists():
        return str(json.loads(verdict.read_text())["accel"])
    return "probe"


def _remember(accel: str) -> None:
    path = _kvm_verdict_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"accel": accel, "at": time.time()}))


def _start(work: Path, accel: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    # The child keeps its own copy of the console fd: closing ours at once keeps the test
    # process's fd table as it was (the reader tests compare it before and after).
    with (work / "console.log").open("ab") as console:
        return subprocess.Popen(
            _command(work, accel, env),
            stdout=console,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            # vng runs virtme-run from the same environment's bin directory.
            env=dict(
                os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
            ),
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(15)


def _wait_booted(
    work: Path, proc: subprocess.Popen[bytes], within_s: float, stop: threading.Event
) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < within_s and not stop.is_set():
        if (work / "booted").exists():
            return time.monotonic() - t0
        if proc.poll() is not None:
            return None
        stop.wait(0.5)
    return None


class Launch:
    """One VM run, split by thread: `start` (the test process's main thread) opens every fd
    the run needs, `wait` only polls and may run in a background thread while other tests
    count their fds, `collect` reads the results back in the main thread."""

    def __init__(self, work: Path, env: dict[str, str], deadline_s: float) -> None:
        self.work = work
        self.env = env
        self.deadline_s = deadline_s
        self.stop = threading.Event()
        self.accel = "tcg"
        self.boot_s: float | None = None
        self.total_s = 0.0
        self._t0 = time.monotonic()
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.work.chmod(0o755)  # the gateway runs as an unprivileged user and reads its config
        self._t0 = time.monotonic()
        accel = choose_accel()
        if accel == "probe":
            # Once per kernel and QEMU on a machine with /dev/kvm: a KVM guest that hangs
            # after the boot loader costs KVM_PROBE_S, then the verdict is cached.
            probe = _start(self.work, "kvm", self.env)
            self.boot_s = _wait_booted(self.work, probe, KVM_PROBE_S, self.stop)
            if self.boot_s is None:
                _stop(probe)
                _remember("tcg")
                accel = "tcg"
            else:
                _remember("kvm")
                self._proc = probe
                accel = "kvm"
        self.accel = accel
        if self._proc is None:
            self._proc = _start(self.work, accel, self.env)

    def wait(self) -> None:
        """Until the guest is done, the deadline passes or `stop` is set; then the VM is
        stopped. No fd is opened here."""
        proc = self._proc
        if proc is None:
            return
        try:
            if self.boot_s is None:
                self.boot_s = _wait_booted(self.work, proc, 180.0, self.stop)
            while not self.stop.is_set() and proc.poll() is None:
                if time.monotonic() - self._t0 > self.deadline_s:
                    break
                self.stop.wait(1.0)
        finally:
            _stop(proc)
            self.total_s = time.monotonic() - self._t0

    def collect(self) -> Run:
        result = Run(self.work, self.accel, self.boot_s, self.total_s)
        if self._proc is not None:
            result.exit_code = self._proc.returncode
        result.complete = (self.work / "done").exists()
        results = self.work / "results.jsonl"
        if results.exists():
            result.outcomes = [
                json.loads(line) for line in results.read_text().splitlines() if line
            ]
        return result
