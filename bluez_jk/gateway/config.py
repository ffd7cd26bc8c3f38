"""The gateway configuration (docs/config.md): strict validation.

Every problem names its key path (`devices[1].adapter`) and the reason. The same field checks
validate the file at start-up and the `cmd/config` payloads that arrive over MQTT, so a value
that the gateway would refuse in the file is refused at run time too.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast, get_args

from bluez_jk.control.policy import WRITABLES
from bluez_jk.errors import ConfigError
from bluez_jk.gateway.victron_config import BankConfig, VictronConfig, parse_banks, parse_victron
from bluez_jk.names import MAC_ADDRESS, NotifyModeSetting, PairingSetting, Passkey
from bluez_jk.reading import ProtocolName

NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
ADAPTER_RE = re.compile(r"hci[0-9]{1,3}")
# A topic prefix is a plain path: no MQTT wildcards, no empty levels, no NUL.
TOPIC_RE = re.compile(r"[^/#+\x00]+(/[^/#+\x00]+)*")

# (low, high) inclusive. poll_interval_s goes down to 0.5 s for keep_connected dashboards.
RANGES: dict[str, tuple[float, float]] = {
    "poll_interval_s": (0.5, 86400.0),
    "timeout_s": (1.0, 600.0),
    "scan_timeout_s": (0.0, 300.0),
    "port": (1, 65535),
    "keepalive": (1, 65535),
    "max_age_s": (1.0, 3600.0),
    "after_failures": (1, 1000),
    "min_interval_s": (10.0, 86400.0),
    "interval_s": (0.0, 7 * 86400.0),  # logbook.interval_s; 0: only on cmd/logbook
}
# Remote payloads are tiny JSON objects; anything bigger is refused before parsing.
MAX_REMOTE_PAYLOAD_BYTES = 4096
REMOTE_KEYS = ("address", "adapter", "poll_interval_s", "timeout_s", "scan_timeout_s")


class ConfigProblems(ConfigError):
    """Every problem found in one document; `problems` lists them, the message joins them."""

    def __init__(self, problems: list[ConfigError]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.key = problems[0].key if problems else None
        self.problems = problems


@dataclass(frozen=True)
class TlsConfig:
    enabled: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    base_topic: str = "bms"
    keepalive: int = 30
    client_id: str | None = None
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    tls: TlsConfig = TlsConfig()


@dataclass(frozen=True)
class HomeAssistantConfig:
    enabled: bool = False
    prefix: str = "homeassistant"


@dataclass(frozen=True)
class ControlConfig:
    """Writes to the BMS (cmd/set): off unless enabled, and only what `allow` names."""

    enabled: bool = False
    allow: tuple[str, ...] = ()
    max_age_s: float = 120.0  # a write needs a successful read at most this old


@dataclass(frozen=True)
class AdapterRecoveryConfig:
    """Power-cycle an adapter on which every device keeps failing (gateway/adapter_health.py).

    On by default: it acts only when the adapter already serves none of its devices, at most
    once per `min_interval_s`, so it costs nothing while things work (docs/config.md)."""

    enabled: bool = True
    after_failures: int = 5
    min_interval_s: float = 600.0


@dataclass(frozen=True)
class LogbookConfig:
    """The BMS's event log (gateway/logbook.py): off unless enabled; read every `interval_s`
    (0: only on cmd/logbook)."""

    enabled: bool = False
    interval_s: float = 3600.0


@dataclass(frozen=True)
class DeviceConfig:
    """One BMS with every setting resolved (per-device value, else the global one)."""

    name: str
    address: str
    adapter: str | None = None
    protocol: ProtocolName | None = None
    poll_interval_s: float = 10.0
    timeout_s: float = 20.0
    scan_timeout_s: float = 5.0
    notify_mode: NotifyModeSetting = "auto"
    keep_connected: bool = False
    control: ControlConfig = ControlConfig()
    logbook: LogbookConfig = LogbookConfig()
    # JK firmware >= 19.30: "auto" pairs when the link demands it, "never" does not; the
    # passkey (from `passkey` or `passkey_file`) is a secret: never in meta, logs or repr.
    pairing: PairingSetting = "auto"
    passkey: Passkey | None = dataclasses.field(default=None, repr=False)
    victron: VictronConfig = dataclasses.field(default_factory=VictronConfig)

    def with_overrides(self, overrides: Mapping[str, Any]) -> DeviceConfig:
        return dataclasses.replace(self, **dict(overrides))

    def runtime_view(self) -> dict[str, Any]:
        """The effective settings as published in `meta` (everything but the name)."""
        return dict(self._view)

    @functools.cached_property
    def _view(self) -> dict[str, Any]:
        # Built once per (frozen) config: `meta` goes out after every read, and asdict's deep
        # copy was a visible share of the gateway's CPU per read.
        view = dataclasses.asdict(self)
        del view["name"]
        view["passkey"] = self.passkey is not None  # whether one is set, never the digits
        del view["victron"]  # a page of tables; the config file has them
        return view


@dataclass(frozen=True)
class GatewayConfig:
    mqtt: MqttConfig
    devices: tuple[DeviceConfig, ...]
    state_dir: Path = Path("/var/lib/bluez-jk")
    allow_remote_config: bool = True
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()
    poll_interval_s: float = 10.0
    timeout_s: float = 20.0
    scan_timeout_s: float = 5.0
    control: ControlConfig = ControlConfig()
    victron: VictronConfig = dataclasses.field(default_factory=VictronConfig)
    banks: tuple[BankConfig, ...] = ()
    adapter_recovery: AdapterRecoveryConfig = AdapterRecoveryConfig()
    logbook: LogbookConfig = LogbookConfig()
    # What a check could not verify here (a systemd credential outside its unit).
    notes: tuple[str, ...] = ()


# systemd puts a unit's LoadCredential= files here, visible only to that unit's processes.
CREDENTIALS_ROOT = "/run/credentials/"


class _Checker:
    """Collects problems instead of stopping at the first, so one run lists them all."""

    def __init__(self, *, defer_credentials: bool = False) -> None:
        self.problems: list[ConfigError] = []
        self.notes: list[str] = []
        self.defer_credentials = defer_credentials

    def fail(self, key: str, reason: str) -> None:
        self.problems.append(ConfigError(reason, key=key))

    def obj(self, value: Any, key: str, allowed: tuple[str, ...]) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.fail(key or "(top level)", f"must be a JSON object, not {_kind(value)}")
            return None
        for extra in sorted(set(value) - set(allowed)):
            self.fail(_join(key, extra), f"unknown key (allowed: {', '.join(allowed)})")
        return value

    def boolean(self, src: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = src.get(key, default)
        if not isinstance(value, bool):
            self.fail(_join(path, key), f"must be true or false, not {_kind(value)}")
            return default
        return value

    def number(
        self, src: Mapping[str, Any], key: str, path: str, default: float, *, integer: bool = False
    ) -> float:
        value = src.get(key, default)
        checked = check_number(value, key, integer=integer)
        if isinstance(checked, str):
            self.fail(_join(path, key), checked)
            return default
        return checked

    def text(
        self,
        src: Mapping[str, Any],
        key: str,
        path: str,
        default: str | None,
        *,
        nullable: bool = True,
        check: Callable[[str], str | None] | None = None,
    ) -> str | None:
        value = src.get(key, default)
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            expected = "a string or null" if nullable else "a string"
            self.fail(_join(path, key), f"must be {expected}, not {_kind(value)}")
            return default
        if check is not None:
            reason = check(value)
            if reason is not None:
                self.fail(_join(path, key), reason)
                return default
        return value


def _join(path: str, key: str) -> str:
    # Keys from outside may be empty or contain anything: quote those, and keep them short.
    shown = key if re.fullmatch(r"[A-Za-z0-9_]{1,40}", key) else json.dumps(key[:40])
    return f"{path}.{shown}" if path else shown


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def check_number(value: Any, key: str, *, integer: bool = False) -> float | str:
    """The value as a number within RANGES[key], or the reason it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be {'an integer' if integer else 'a number'}, not {_kind(value)}"
    if integer and not isinstance(value, int):
        return f"must be an integer, not {_shown(value)}"
    # Python compares an int of any size with a float exactly; math.isfinite() and the
    # `:g` format would raise OverflowError on an int beyond 1.8e308.
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    low, high = RANGES[key]
    if not low <= value <= high:
        return f"must be between {low:g} and {high:g}, got {_shown(value)}"
    return value


def _shown(value: float) -> str:
    """A number for a message: short even for a 4,000-digit integer."""
    if isinstance(value, int) and abs(value) >= 10**15:
        return f"an integer of {len(str(abs(value)))} digits"
    return f"{value:g}" if isinstance(value, float) else str(value)


def check_mac(value: str) -> str | None:
    if not MAC_ADDRESS.fullmatch(value):
        return f"{value[:40]!r} is not a MAC address like C8:47:80:37:02:E8"
    return None


def check_adapter(value: str) -> str | None:
    if value and not ADAPTER_RE.fullmatch(value):
        return f"{value[:40]!r} is not an adapter name like hci0"
    return None


def check_name(value: str) -> str | None:
    if not NAME_RE.fullmatch(value):
        return f"{value[:40]!r} must be 1 to 32 of A-Z a-z 0-9 _ -"
    return None


def check_topic(value: str) -> str | None:
    shown = ascii(value[:40])
    if not TOPIC_RE.fullmatch(value) or len(value) > 200:
        return f"{shown} is not a topic prefix (no + or #, no empty levels)"
    if value.startswith("$"):
        # Brokers reserve $-topics ($SYS/...): they drop what clients publish there.
        return f"{shown} starts with $, which brokers reserve for themselves"
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        # Control characters confuse every consumer; a lone surrogate is not UTF-8 and
        # cannot be sent at all (paho fails on it at connect, in the last will).
        return f"{shown} contains a control character or invalid Unicode"
    return None


def _check_choice(choices: tuple[str, ...]) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _parse_tls(raw: Any, c: _Checker, base_dir: Path) -> TlsConfig:
    keys = ("enabled", "ca_file", "cert_file", "key_file")
    src = c.obj(raw, "mqtt.tls", keys)
    if src is None:
        return TlsConfig()
    files: dict[str, str | None] = {}
    for key in keys[1:]:
        value = c.text(src, key, "mqtt.tls", None)
        if value is not None:
            resolved = base_dir / value
            if not resolved.is_file():
                c.fail(f"mqtt.tls.{key}", f"no such file: {resolved}")
            value = str(resolved)
        files[key] = value
    if (files["cert_file"] is None) != (files["key_file"] is None):
        c.fail("mqtt.tls", "cert_file and key_file go together")
    return TlsConfig(
        enabled=c.boolean(src, "enabled", "mqtt.tls", False),
        ca_file=files["ca_file"],
        cert_file=files["cert_file"],
        key_file=files["key_file"],
    )


def _parse_mqtt(raw: Any, c: _Checker, base_dir: Path) -> MqttConfig:
    keys = (
        "host",
        "port",
        "base_topic",
        "keepalive",
        "client_id",
        "username",
        "password",
        "password_file",
        "tls",
    )
    src = c.obj(raw, "mqtt", keys)
    if src is None:
        return MqttConfig()

    def check_host(value: str) -> str | None:
        return None if value.strip() and len(value) <= 253 else "must be a host name or address"

    def check_client_id(value: str) -> str | None:
        # Per-device connections append "-<name>" (33 characters at most) to this id.
        return None if 0 < len(value) <= 64 and value.isprintable() else "1 to 64 characters"

    password = c.text(src, "password", "mqtt", None)
    password_file = c.text(src, "password_file", "mqtt", None)
    if password is not None and password_file is not None:
        c.fail("mqtt.password_file", "give password or password_file, not both")
    elif password_file is not None:
        path = base_dir / password_file
        try:
            password = path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as err:
            if (
                c.defer_credentials
                and str(path).startswith(CREDENTIALS_ROOT)
                and not os.environ.get("CREDENTIALS_DIRECTORY")
            ):
                # Only the unit sees this file; its ExecStartPre check reads it for real.
                c.notes.append(
                    f"mqtt.password_file: {path} exists only inside the systemd unit "
                    "(LoadCredential=); not checked here, the unit checks it before each start"
                )
            elif str(path).startswith(CREDENTIALS_ROOT):
                c.fail(
                    "mqtt.password_file",
                    f"cannot read {path}: {err.strerror} (a systemd credential: it exists only "
                    "inside the jk-ble-mqtt-gateway unit)",
                )
            else:
                c.fail("mqtt.password_file", f"cannot read {path}: {err.strerror}")
        except UnicodeDecodeError:
            c.fail("mqtt.password_file", f"{path} is not UTF-8 text")
    return MqttConfig(
        host=cast(str, c.text(src, "host", "mqtt", "127.0.0.1", nullable=False, check=check_host)),
        port=int(c.number(src, "port", "mqtt", 1883, integer=True)),
        base_topic=cast(
            str, c.text(src, "base_topic", "mqtt", "bms", nullable=False, check=check_topic)
        ),
        keepalive=int(c.number(src, "keepalive", "mqtt", 30, integer=True)),
        client_id=c.text(src, "client_id", "mqtt", None, check=check_client_id),
        username=c.text(src, "username", "mqtt", None),
        password=password,
        tls=_parse_tls(src.get("tls", {}), c, base_dir),
    )


CONTROL_KEYS = ("enabled", "allow", "max_age_s")


def _parse_control(raw: Any, path: str, c: _Checker, default: ControlConfig) -> ControlConfig:
    """`control` at the top level or per device; a per-device key replaces the global one."""
    src = c.obj(raw, path, CONTROL_KEYS)
    if src is None:
        return default
    allow = default.allow
    if "allow" in src:
        items = src["allow"]
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            c.fail(_join(path, "allow"), f"must be an array of setting names ({_known()})")
        else:
            unknown = [i for i in items if i not in WRITABLES]
            for item in unknown:
                c.fail(_join(path, "allow"), f"unknown setting {item[:40]!r} (known: {_known()})")
            allow = tuple(dict.fromkeys(items))
    return ControlConfig(
        enabled=c.boolean(src, "enabled", path, default.enabled),
        allow=allow,
        max_age_s=c.number(src, "max_age_s", path, default.max_age_s),
    )


RECOVERY_KEYS = ("enabled", "after_failures", "min_interval_s")


def _parse_adapter_recovery(raw: Any, c: _Checker) -> AdapterRecoveryConfig:
    path = "adapter_recovery"
    default = AdapterRecoveryConfig()
    src = c.obj(raw, path, RECOVERY_KEYS)
    if src is None:
        return default
    return AdapterRecoveryConfig(
        enabled=c.boolean(src, "enabled", path, default.enabled),
        after_failures=int(
            c.number(src, "after_failures", path, default.after_failures, integer=True)
        ),
        min_interval_s=c.number(src, "min_interval_s", path, default.min_interval_s),
    )


def _parse_logbook(raw: Any, path: str, c: _Checker, default: LogbookConfig) -> LogbookConfig:
    """`logbook` at the top level or per device; a per-device key replaces the global one."""
    src = c.obj(raw, path, ("enabled", "interval_s"))
    if src is None:
        return default
    return LogbookConfig(
        enabled=c.boolean(src, "enabled", path, default.enabled),
        interval_s=c.number(src, "interval_s", path, default.interval_s),
    )


def _known() -> str:
    return ", ".join(WRITABLES)


DEVICE_KEYS = (
    "name",
    "address",
    "adapter",
    "protocol",
    "poll_interval_s",
    "timeout_s",
    "scan_timeout_s",
    "notify_mode",
    "keep_connected",
    "control",
    "logbook",
    "pairing",
    "passkey",
    "passkey_file",
    "victron",
)


def _parse_passkey(src: Mapping[str, Any], path: str, c: _Checker, base: Path) -> Passkey | None:
    """`passkey` (digits) or `passkey_file` (a file holding them); the value never appears in
    a problem message."""
    raw, file = src.get("passkey"), src.get("passkey_file")
    if raw is not None and file is not None:
        c.fail(_join(path, "passkey_file"), "give passkey or passkey_file, not both")
        return None
    text: str | None = None
    if raw is not None:
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            c.fail(_join(path, "passkey"), "must be 1 to 6 digits (a string or a number)")
            return None
        text = str(raw)
    elif file is not None:
        if not isinstance(file, str) or not file:
            c.fail(_join(path, "passkey_file"), "must be a file name")
            return None
        try:
            text = (base / file).read_text(encoding="utf-8").strip()
        except OSError as err:
            c.fail(_join(path, "passkey_file"), f"cannot read {base / file}: {err.strerror}")
            return None
        except UnicodeDecodeError:
            c.fail(_join(path, "passkey_file"), f"{base / file} is not UTF-8 text")
            return None
    if text is None:
        return None
    try:
        return Passkey.parse(text)
    except ValueError:
        key = "passkey" if raw is not None else "passkey_file"
        c.fail(_join(path, key), "must be 1 to 6 digits (the value is not shown)")
        return None


def _parse_device(
    raw: Any, path: str, c: _Checker, defaults: DeviceConfig, base: Path
) -> DeviceConfig | None:
    src = c.obj(raw, path, DEVICE_KEYS)
    if src is None:
        return None
    before = len(c.problems)
    for required in ("name", "address"):
        if required not in src:
            c.fail(_join(path, required), "is required")
    name = c.text(src, "name", path, None, nullable=False, check=check_name)
    address = c.text(src, "address", path, None, nullable=False, check=check_mac)
    adapter = c.text(src, "adapter", path, None, check=check_adapter)
    protocol = c.text(src, "protocol", path, None, check=_check_choice(get_args(ProtocolName)))
    notify_mode = c.text(
        src, "notify_mode", path, None, check=_check_choice(get_args(NotifyModeSetting))
    )
    # A per-device null means "use the global value" (docs/config.md, "devices[]").
    numbers = {
        key: c.number(src, key, path, getattr(defaults, key))
        for key in ("poll_interval_s", "timeout_s", "scan_timeout_s")
        if src.get(key) is not None
    }
    pairing = c.text(src, "pairing", path, None, check=_check_choice(get_args(PairingSetting)))
    passkey = _parse_passkey(src, path, c, base)
    keep = src.get("keep_connected")
    keep_connected = c.boolean(src, "keep_connected", path, False) if keep is not None else False
    control = defaults.control
    if src.get("control") is not None:
        control = _parse_control(src["control"], _join(path, "control"), c, defaults.control)
    victron = defaults.victron
    if src.get("victron") is not None:
        victron = parse_victron(src["victron"], _join(path, "victron"), c, defaults.victron)
    logbook = defaults.logbook
    if src.get("logbook") is not None:
        logbook = _parse_logbook(src["logbook"], _join(path, "logbook"), c, defaults.logbook)
    if len(c.problems) > before or name is None or address is None:
        return None
    return dataclasses.replace(
        defaults,
        name=name,
        address=address.upper(),
        adapter=adapter or None,
        protocol=cast(ProtocolName | None, protocol),
        notify_mode=cast(NotifyModeSetting, notify_mode or "auto"),
        keep_connected=keep_connected,
        control=control,
        logbook=logbook,
        pairing=cast(PairingSetting, pairing or "auto"),
        passkey=passkey,
        victron=victron,
        **numbers,
    )


TOP_KEYS = (
    "mqtt",
    "poll_interval_s",
    "timeout_s",
    "scan_timeout_s",
    "state_dir",
    "allow_remote_config",
    "homeassistant",
    "control",
    "victron",
    "adapter_recovery",
    "logbook",
    "devices",
    "banks",
)


def parse_config(
    raw: Any, *, base_dir: Path | None = None, defer_credentials: bool = False
) -> GatewayConfig:
    """A validated GatewayConfig from the parsed JSON document; raises ConfigProblems.

    `base_dir` resolves relative file names (password_file, TLS files): the config's folder.
    `defer_credentials` (`--check-config` from a shell) accepts a password_file under
    /run/credentials/ that only the service can read, and says so in `notes`.
    """
    base = base_dir or Path.cwd()
    c = _Checker(defer_credentials=defer_credentials)
    src = c.obj(raw, "", TOP_KEYS)
    if src is None:
        raise ConfigProblems(c.problems)
    mqtt = _parse_mqtt(src.get("mqtt", {}), c, base)
    poll = c.number(src, "poll_interval_s", "", 10.0)
    timeout = c.number(src, "timeout_s", "", 20.0)
    scan = c.number(src, "scan_timeout_s", "", 5.0)
    state_dir = c.text(
        src,
        "state_dir",
        "",
        "/var/lib/bluez-jk",
        nullable=False,
        check=lambda v: None if v.strip() and "\x00" not in v else "must be a directory path",
    )
    allow_remote = c.boolean(src, "allow_remote_config", "", True)
    ha = HomeAssistantConfig()
    ha_src = c.obj(src.get("homeassistant", {}), "homeassistant", ("enabled", "prefix"))
    if ha_src is not None:
        ha = HomeAssistantConfig(
            enabled=c.boolean(ha_src, "enabled", "homeassistant", False),
            prefix=cast(
                str,
                c.text(
                    ha_src,
                    "prefix",
                    "homeassistant",
                    "homeassistant",
                    nullable=False,
                    check=check_topic,
                ),
            ),
        )
    control = _parse_control(src.get("control", {}), "control", c, ControlConfig())
    victron = parse_victron(src.get("victron", {}), "victron", c, VictronConfig())
    recovery = _parse_adapter_recovery(src.get("adapter_recovery", {}), c)
    logbook = _parse_logbook(src.get("logbook", {}), "logbook", c, LogbookConfig())
    defaults = DeviceConfig(
        name="",
        address="",
        poll_interval_s=poll,
        timeout_s=timeout,
        scan_timeout_s=scan,
        control=control,
        victron=victron,
        logbook=logbook,
    )
    devices: list[DeviceConfig] = []
    raw_devices = src.get("devices")
    if not isinstance(raw_devices, list) or not raw_devices:
        c.fail("devices", "must be a non-empty array of devices")
    else:
        for index, item in enumerate(raw_devices):
            device = _parse_device(item, f"devices[{index}]", c, defaults, base)
            if device is not None:
                devices.append(device)
    seen_names: dict[str, int] = {}
    seen_addresses: dict[str, int] = {}
    for index, device in enumerate(devices):
        if device.name in seen_names:
            c.fail(f"devices[{index}].name", f"duplicate name {device.name!r}")
        if device.address in seen_addresses:
            # Two names for one BMS would poll it twice and fight over its link.
            c.fail(f"devices[{index}].address", f"duplicate address {device.address}")
        seen_names.setdefault(device.name, index)
        seen_addresses.setdefault(device.address, index)
    banks = parse_banks(src.get("banks"), c, seen_names, check_name)
    if c.problems:
        raise ConfigProblems(c.problems)
    return GatewayConfig(
        mqtt=mqtt,
        devices=tuple(devices),
        state_dir=base / cast(str, state_dir),
        allow_remote_config=allow_remote,
        homeassistant=ha,
        poll_interval_s=poll,
        timeout_s=timeout,
        scan_timeout_s=scan,
        control=control,
        victron=victron,
        banks=banks,
        adapter_recovery=recovery,
        logbook=logbook,
        notes=tuple(c.notes),
    )


def load_config(path: str | Path, *, defer_credentials: bool = False) -> GatewayConfig:
    """Read and validate the config file; every failure is a ConfigError naming the key."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read {file}: {err.strerror}", key="config") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{file} is not UTF-8 text", key="config") from err
    raw = parse_json(text, str(file), key="config")
    return parse_config(raw, base_dir=file.resolve().parent, defer_credentials=defer_credentials)


def parse_json(text: str | bytes, what: str, *, key: str) -> Any:
    """json.loads with every way it can fail as one ConfigError: bad syntax, nesting deeper
    than the interpreter's recursion limit, an integer of more than 4,300 digits."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"{what} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}",
            key=key,
        ) from err
    except RecursionError as err:
        raise ConfigError(f"{what} is nested too deeply", key=key) from err
    except (ValueError, UnicodeDecodeError) as err:
        raise ConfigError(f"{what} is not valid JSON: {err}", key=key) from err


def parse_remote_config(payload: bytes) -> dict[str, Any]:
    """The overrides in one `cmd/config` payload, validated like the file; raises ConfigError.

    `adapter` null or "" means the default adapter (stored as None).
    """
    if len(payload) > MAX_REMOTE_PAYLOAD_BYTES:
        raise ConfigError(
            f"payload of {len(payload)} bytes is larger than {MAX_REMOTE_PAYLOAD_BYTES}",
            key="payload",
        )
    try:
        raw = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ConfigError("not valid JSON", key="payload") from err
    c = _Checker()
    src = c.obj(raw, "payload", REMOTE_KEYS)
    if src is None or c.problems:
        raise ConfigProblems(c.problems)
    out: dict[str, Any] = {}
    if "address" in src:
        address = c.text(src, "address", "", None, nullable=False, check=check_mac)
        if address is not None:
            out["address"] = address.upper()
    if "adapter" in src:
        out["adapter"] = c.text(src, "adapter", "", None, check=check_adapter) or None
    for key in ("poll_interval_s", "timeout_s", "scan_timeout_s"):
        if key in src:
            out[key] = c.number(src, key, "", 0.0)
    if c.problems:
        raise ConfigProblems(c.problems)
    return out


def validate_overrides(overrides: Any) -> dict[str, Any]:
    """Overrides read back from the state file, checked again (the file may be hand-edited)."""
    return parse_remote_config(json.dumps(overrides).encode())
