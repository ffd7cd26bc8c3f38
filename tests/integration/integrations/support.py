"""Helpers for the integrations tests: a private InfluxDB 1.x on free loopback ports.

The tests run unless BLUEZ_JK_SKIP_INTEGRATIONS=1 is set; a missing install is a failure that
names tools/setup_integrations.sh, never a silent skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.mqtt import free_port

SKIP_ENV = "BLUEZ_JK_SKIP_INTEGRATIONS"
# Every test module here carries this mark: they skip only when asked to.
skip_if_asked = pytest.mark.skipif(
    os.environ.get(SKIP_ENV) == "1",
    reason=f"{SKIP_ENV}=1: InfluxDB / Node-RED integration tests skipped on request",
)


def require_binary(name: str) -> str:
    found = shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if os.path.exists(p)), None
    )
    if not found:
        pytest.fail(
            f"{name} is not installed: run tools/setup_integrations.sh (or set {SKIP_ENV}=1)"
        )
    return found


@dataclass
class Influx:
    """One influxd process with its own data directory and HTTP port."""

    workdir: Path
    http_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout_s: float = 30.0) -> None:
        rpc_port = free_port()
        conf = self.workdir / "influxdb.conf"
        conf.write_text(
            "reporting-disabled = true\n"
            f'bind-address = "127.0.0.1:{rpc_port}"\n'
            f'[meta]\n  dir = "{self.workdir}/meta"\n'
            f'[data]\n  dir = "{self.workdir}/data"\n  wal-dir = "{self.workdir}/wal"\n'
            "  query-log-enabled = false\n"
            "[monitor]\n  store-enabled = false\n"
            "[subscriber]\n  enabled = false\n"
            "[continuous_queries]\n  enabled = false\n"
            f'[http]\n  bind-address = "127.0.0.1:{self.http_port}"\n'
            "  log-enabled = false\n  pprof-enabled = false\n"
        )
        self.proc = subprocess.Popen(
            [require_binary("influxd"), "-config", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "influxd.log").open("ab"),
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.workdir / "influxd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"influxd exited with {self.proc.returncode}: {log}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/ping", timeout=1) as resp,
            ):
                if resp.status == 204:
                    return
            time.sleep(0.05)  # polling a port that is not open yet; bounded by the deadline
        raise RuntimeError(f"influxd did not answer /ping within {timeout_s} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def query(self, q: str, db: str | None = None, epoch: str = "ns") -> dict[str, Any]:
        params = {"q": q, "epoch": epoch}
        if db:
            params["db"] = db
        data = urllib.parse.urlencode(params).encode()
        with urllib.request.urlopen(f"{self.url}/query", data=data, timeout=10) as resp:
            result: dict[str, Any] = json.loads(resp.read())
        for statement in result.get("results", []):
            if "error" in statement:
                raise AssertionError(f"InfluxQL error for {q!r}: {statement['error']}")
        return result

    def write(self, db: str, lines: str, precision: str = "ns") -> None:
        url = f"{self.url}/write?" + urllib.parse.urlencode({"db": db, "precision": precision})
        request = urllib.request.Request(url, data=lines.encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 204, resp.read()
