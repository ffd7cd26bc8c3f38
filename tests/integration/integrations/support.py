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
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.mqtt import free_port

REPO = Path(__file__).resolve().parents[3]
FLOW = REPO / "config" / "node-red" / "jk-bms-flow.json"
SETUP = REPO / "tools" / "setup_integrations.sh"
SKIP_ENV = "BLUEZ_JK_SKIP_INTEGRATIONS"
# Every test module here carries this mark: they skip only when asked to.
skip_if_asked = pytest.mark.skipif(
    os.environ.get(SKIP_ENV) == "1",
    reason=f"{SKIP_ENV}=1: InfluxDB / Node-RED integration tests skipped on request",
)


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if os.path.exists(p)), None
    )


def require_binary(name: str) -> str:
    """The binary's path; runs the idempotent setup script once if it is missing."""
    found = _which(name)
    if not found:
        subprocess.run(["bash", str(SETUP)], check=False, timeout=600)
        found = _which(name)
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


def node_red_dir() -> Path:
    return Path(
        os.environ.get("BLUEZ_JK_NODE_RED_DIR", Path.home() / ".cache" / "bluez-jk" / "node-red")
    )


def ensure_node_red() -> Path:
    """The cached Node-RED install; installs it (idempotent script) when the cache is empty."""
    red_js = node_red_dir() / "node_modules" / "node-red" / "red.js"
    if not red_js.exists():
        subprocess.run(["bash", str(SETUP)], check=False, timeout=600)
    if not red_js.exists():
        pytest.fail(
            f"Node-RED is not installed in {node_red_dir()}: run {SETUP} (or set {SKIP_ENV}=1)"
        )
    return red_js


def shipped_flow(broker_host: str, broker_port: int) -> list[dict[str, Any]]:
    """The shipped flow with its one setting (the broker) pointed at the test broker."""
    flow: list[dict[str, Any]] = json.loads(FLOW.read_text())
    brokers = [n for n in flow if n["type"] == "mqtt-broker"]
    assert len(brokers) == 1, "the broker must be one obvious setting"
    brokers[0]["broker"] = broker_host
    brokers[0]["port"] = str(broker_port)
    return flow


@dataclass
class NodeRed:
    """Node-RED from the cache dir, running the shipped flow with a private user dir."""

    workdir: Path
    flow: list[dict[str, Any]]
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "node-red.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout_s: float = 60.0) -> None:
        red_js = ensure_node_red()
        self.port = self.port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "flows.json").write_text(json.dumps(self.flow))
        # Loopback only, no palette installs, no update checks: tests talk to 127.0.0.1 only.
        (self.workdir / "settings.js").write_text(
            "module.exports = {\n"
            f'  uiHost: "127.0.0.1", uiPort: {self.port}, flowFile: "flows.json",\n'
            '  credentialSecret: false, httpAdminRoot: "/admin", httpNodeRoot: "/",\n'
            '  logging: { console: { level: "info", metrics: false, audit: false } },\n'
            "  diagnostics: { enabled: false, ui: false },\n"
            "  telemetry: { enabled: false, updateNotification: false },\n"
            "  externalModules: { autoInstall: false, palette: { allowInstall: false } },\n"
            "  editorTheme: { tours: false },\n"
            "};\n"
        )
        self.proc = subprocess.Popen(
            [
                require_binary("node"),
                str(red_js),
                "--userDir",
                str(self.workdir),
                "--settings",
                str(self.workdir / "settings.js"),
            ],
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Node-RED exited with {self.proc.returncode}:\n{self.log()}")
            log = self.log()
            if "Started flows" in log and "Connected to broker" in log:
                return
            time.sleep(0.05)  # waiting for log lines; bounded by the deadline
        raise RuntimeError(f"Node-RED did not start its flows within {timeout_s} s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def request(self, path: str, method: str = "GET", token: str | None = None) -> tuple[int, Any]:
        """One HTTP request (with the flow's bearer token when given): status and JSON body."""
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        request = urllib.request.Request(
            f"{self.url}{path}",
            method=method,
            data=b"" if method == "POST" else None,
            headers=headers,
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                body = resp.read()
                status = resp.status
        except urllib.error.HTTPError as err:
            body, status = err.read(), err.code
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode(errors="replace")

    def wait_json(self, path: str, predicate: Any, timeout_s: float = 10.0) -> Any:
        """GET `path` until `predicate(json)` holds (bounded); returns that JSON."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            status, last = self.request(path)
            if status == 200 and predicate(last):
                return last
            time.sleep(0.05)  # polling an HTTP endpoint; bounded by the deadline
        raise AssertionError(f"GET {path} never satisfied the condition; last answer {last!r}")
