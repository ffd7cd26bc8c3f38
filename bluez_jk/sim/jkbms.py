"""An emulated JK-BMS board: answers command writes with real 0x55AA frames, paced and chunked
the way its BLE module relays them (docs/protocol.md 1.4, 3, 9).

Every frame is built with the project's own construct structs (`bluez_jk.protocol`); this
module only decides *what* the board says and *when*.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from construct import ConstructError

from bluez_jk.control.policy import BMS_RANGES
from bluez_jk.protocol import ACK, REGISTERS, Command, encode_frame, parse_command
from bluez_jk.protocol.errors import FrameError
from bluez_jk.protocol.frames import LOGBOOK_ENTRIES
from bluez_jk.sim.devices import DeviceSpec
from bluez_jk.sim.faults import FaultSet
from bluez_jk.sim.timing import Timing

log = logging.getLogger(__name__)

AT_NOISE = b"AT\r\n"
FrameKind = Literal["device_info", "cell_info", "settings", "logbook"]
_CMD_DEVICE_INFO = 0x97
_CMD_CELL_INFO = 0x96
_CMD_LOGBOOK = 0xA1
# Logbook codes of a switch turned (off, on) by the app (docs/protocol.md appendix B).
_SWITCH_EVENTS: dict[str, tuple[int, int]] = {
    "charging_switch": (0x03, 0x04),
    "discharging_switch": (0x05, 0x06),
}


class BmsState:
    """Physical state of the pack; drifts slowly so that successive frames differ."""

    def __init__(self, spec: DeviceSpec, seed: int) -> None:
        self.spec = spec
        self.rng = random.Random(seed)  # noqa: S311 - simulation, not crypto
        self.cells = spec.cells
        self.offsets = [self.rng.uniform(-0.008, 0.008) for _ in range(self.cells)]
        # Every emulated pack is its own battery, derived from its address: two simulated BMS
        # never share a serial number (Home Assistant identifies devices by it) or readings.
        self.serial = f"{(seed * 2_654_435_761) % 10**11:011d}"
        self.base_v = 3.31
        self.current_a = round(self.rng.uniform(-8.0, 8.0), 1)
        self.soc_pct = round(self.rng.uniform(35.0, 95.0), 1)
        self.capacity_ah = float(self.rng.choice((100, 150, 200, 230, 280, 304, 314)))
        ambient = self.rng.uniform(15.0, 28.0)
        self.temps_c = [round(ambient + self.rng.uniform(-0.5, 0.5), 1) for _ in range(2)]
        self.mos_c = round(ambient + self.rng.uniform(3.0, 6.0), 1)
        self.cycles = self.rng.randint(5, 400)
        self.power_on_count = self.rng.randint(3, 60)
        self.started = time.monotonic()
        self.overrides: dict[str, Any] = {}
        # Settings changed by register writes, shown in every later settings frame.
        self.written: dict[str, Any] = {}
        # Boot, remote charge off, charge off by app: days before the simulator started.
        self.events: list[dict[str, int]] = [
            {"t": 3_600_000 - 86_400 * n, "code": code} for n, code in ((3, 1), (2, 7), (1, 3))
        ]
        self._last = time.monotonic()

    def set_overrides(self, values: dict[str, Any]) -> None:
        """Readings the next frames report instead of the modelled ones; `clear` drops all."""
        self.overrides.update(values)
        if values.get("clear"):
            self.overrides.clear()

    def advance(self) -> None:
        now = time.monotonic()
        dt = now - self._last
        self._last = now
        self.current_a = max(-60.0, min(60.0, self.current_a + self.rng.uniform(-0.6, 0.6)))
        self.soc_pct = max(
            1.0, min(100.0, self.soc_pct + self.current_a * dt / 36 / self.capacity_ah * 100)
        )
        self.base_v = 3.0 + 0.45 * self.soc_pct / 100 + 0.002 * math.sin(now)
        self.offsets = [
            max(-0.03, min(0.03, o + self.rng.uniform(-0.001, 0.001))) for o in self.offsets
        ]
        self.temps_c = [t + self.rng.uniform(-0.1, 0.1) for t in self.temps_c]

    def cell_info(self) -> dict[str, Any]:
        voltages = [round(self.base_v + o, 3) for o in self.offsets]
        if "voltages" in self.overrides:
            voltages = list(self.overrides["voltages"])
        resistances = [round(0.05 + 0.001 * (i % 7), 3) for i in range(len(voltages))]
        total = round(sum(voltages), 3)
        hi = max(range(len(voltages)), key=voltages.__getitem__)
        lo = min(range(len(voltages)), key=voltages.__getitem__)
        values: dict[str, Any] = {
            "voltages": voltages,
            "resistances": resistances,
            "average_cell_voltage": round(total / len(voltages), 3),
            "delta_cell_voltage": round(voltages[hi] - voltages[lo], 3),
            "max_voltage_cell": hi,
            "min_voltage_cell": lo,
            "balancing_action": 0,
            "balancing_current": 0.0,
            "total_runtime": int(time.monotonic() - self.started) + 1_234_567,
        }
        if self.spec.protocol != "JK04":
            values |= {
                "enabled_cells_bitmask": (1 << len(voltages)) - 1,
                "total_voltage": total,
                "current": round(self.current_a, 3),
                "temperature_sensor_1": round(self.temps_c[0], 1),
                "temperature_sensor_2": round(self.temps_c[1], 1),
                "temperature_mos": round(self.mos_c, 1),
                "battery_soc": round(self.soc_pct),
                "capacity_remain": round(self.capacity_ah * self.soc_pct / 100, 3),
                "capacity_nominal": self.capacity_ah,
                "cycle_count": self.cycles,
                "cycle_capacity": round(self.cycles * self.capacity_ah, 3),
                "state_of_health": 100,
                "charging_switch_enabled": 1,
                "discharging_switch_enabled": 1,
                "temperature_sensor_present_bitmask": 0b00000111,
            }
        for switch in ("charging_switch", "discharging_switch"):
            if switch in self.written and self.spec.protocol != "JK04":
                values[f"{switch}_enabled"] = self.written[switch]  # the MOSFET follows it
        values.update({k: v for k, v in self.overrides.items() if k != "voltages"})
        return values

    def device_info(self) -> dict[str, Any]:
        profile = self.spec.profile
        values: dict[str, Any] = {
            "vendor_id": profile.vendor_id,
            "hw_rev": profile.hw_rev,
            "sw_rev": profile.sw_rev,
            "uptime": self.uptime_s(),
            "power_on_count": self.power_on_count,
            "device_name": self.spec.display_name[:15],
            "manufacturing_date": "240115",
            "serial_number": self.serial,
            "user_data": "bluez-jk sim",
        }
        return values

    def uptime_s(self) -> int:
        return int(time.monotonic() - self.started) + 3_600_000

    def logbook(self) -> dict[str, Any]:
        """The event history (docs/protocol.md 5.6; codes per Appendix B): a BMS answers
        with the same entries every time, plus the events since, the newest 50 of them."""
        entries = self.events[-LOGBOOK_ENTRIES:]
        return {"entry_count": len(entries), "entries": entries}

    def log_event(self, code: int) -> None:
        self.events.append({"t": self.uptime_s(), "code": code})

    def settings(self) -> dict[str, Any]:
        return self._factory_settings() | self.written

    def _factory_settings(self) -> dict[str, Any]:
        if self.spec.protocol == "JK04":
            return {
                "cell_count": self.cells,
                "power_off_voltage": 2.6,
                "balance_start_voltage": 3.4,
                "balance_trigger_voltage": 0.005,
                "max_balance_current": 2.0,
                "balancing_switch": 1,
            }
        return {
            "smart_sleep_voltage": 3.3, "cell_uvp": 2.7, "cell_uvpr": 2.9, "cell_ovp": 3.65,
            "cell_ovpr": 3.55, "balance_trigger_voltage": 0.005, "soc_100_voltage": 3.45,
            "soc_0_voltage": 3.0, "request_charge_voltage": 3.5, "request_float_voltage": 3.4,
            "power_off_voltage": 2.6, "max_charge_current": 100.0, "charge_ocp_delay": 30,
            "charge_ocp_recovery": 60, "max_discharge_current": 150.0, "discharge_ocp_delay": 300,
            "discharge_ocp_recovery": 60, "scp_recovery": 5, "max_balance_current": 2.0,
            "charge_otp": 55.0, "charge_otpr": 50.0, "discharge_otp": 60.0,
            "discharge_otpr": 55.0, "charge_utp": 0.0, "charge_utpr": 5.0, "mos_otp": 90.0,
            "mos_otpr": 80.0, "cell_count": self.cells, "charging_switch": 1,
            "discharging_switch": 1, "balancing_switch": 1, "nominal_capacity": self.capacity_ah,
            "scp_delay": 1500, "balance_start_voltage": 3.4,
        }  # fmt: skip


@dataclass(frozen=True)
class Transmission:
    data: bytes
    kind: str  # "device_info", "cell_info", "settings", "ack", "noise"


class JkBms:
    def __init__(
        self,
        spec: DeviceSpec,
        timing: Timing,
        faults: FaultSet,
        notify: Callable[[bytes], None],
        drop: Callable[[], Awaitable[None]],
    ) -> None:
        self.spec = spec
        self.timing = timing
        self.faults = faults
        self._notify = notify
        self._drop = drop
        seed = int(spec.address.replace(":", ""), 16)
        self.state = BmsState(spec, seed)
        self._rng = random.Random(seed ^ 0x55AA)  # noqa: S311 - simulation
        self._queue: asyncio.Queue[Transmission] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None
        self._stream: asyncio.Task[None] | None = None
        self._noise: asyncio.Task[None] | None = None
        self._counter = 0
        self.frames_sent = 0

    @property
    def address(self) -> str:
        return self.spec.address

    # ---- life cycle (bound to the BLE link) ------------------------------------------------

    def subscribed(self) -> None:
        """The CCCD was written: under `junk` the module's "AT\\r\\n" noise starts (3.4)."""
        if self._noise is None and self.faults.active("junk", self.address):
            self._noise = _start(self._at_noise())

    def stop(self) -> None:
        for task in (self._sender, self._stream, self._noise):
            if task is not None:
                task.cancel()
        self._sender = self._stream = self._noise = None
        self._queue = asyncio.Queue()

    # ---- commands ----------------------------------------------------------------------------

    def on_write(self, data: bytes) -> None:
        try:
            command = parse_command(data)
        except FrameError:
            log.debug("sim %s: ignoring a write that is no command: %s", self.address, data.hex())
            return
        if self.faults.active("silent", self.address):
            return
        if command.code == _CMD_DEVICE_INFO:
            self._send_frame("device_info", counter=0)
            self._send(ACK, "ack")
        elif command.code == _CMD_CELL_INFO:
            self._send_frame("settings", counter=self._next_counter())
            if self.spec.profile.repeat_device_info:
                # 14.x+ repeat the 0x03 frame with counter 0xA5 (docs/protocol.md 9, item 3).
                self._send_frame("device_info", counter=0xA5)
            self._send(ACK, "ack")
            if self._stream is None:
                self._stream = _start(self._cell_stream())
        elif (
            command.code == _CMD_LOGBOOK
            and self.spec.protocol != "JK04"
            and not self.faults.active("no-logbook", self.address)
        ):
            self._send_frame("logbook", counter=self._next_counter())
            self._send(ACK, "ack")
        else:
            # Register writes and other requests: the board acknowledges them (2.4), whether
            # it takes the value or not.
            self._apply_register(command)
            self._send(ACK, "ack")

    def _apply_register(self, command: Command) -> None:
        """A register write changes the settings the next 0x01 frame shows, unless the value
        is outside what the board accepts (then it is ignored, as the firmware does, 2.4) or
        the `ignore-writes` fault is armed."""
        found = [
            (key, reg)
            for key, reg in REGISTERS[self.spec.protocol].items()
            if reg.code == command.code and reg.encoding.sizeof() == command.length
        ]
        if not found:
            log.info("sim %s: no register 0x%02X, ignored", self.address, command.code)
            return
        key, register = found[0]
        try:
            raw = register.encoding.parse(command.value)
        except ConstructError:
            return
        value = raw if register.div == 1 else raw / register.div
        low, high = BMS_RANGES.get(key, (-math.inf, math.inf))
        if not low <= value <= high:
            log.info("sim %s: %s=%r outside %g..%g, ignored", self.address, key, value, low, high)
            return
        if self.faults.active("ignore-writes", self.address):
            log.info("sim %s: ignore-writes, %s=%r not applied", self.address, key, value)
            return
        self.state.written[key] = value
        if key in _SWITCH_EVENTS:
            self.state.log_event(_SWITCH_EVENTS[key][bool(value)])

    def _next_counter(self) -> int:
        self._counter = (self._counter + 1) & 0xFF
        return self._counter

    def _send_frame(self, kind: FrameKind, counter: int) -> None:
        if kind == "cell_info":
            self.state.advance()
            values = self.state.cell_info()
        elif kind == "device_info":
            values = self.state.device_info()
        elif kind == "logbook":
            values = self.state.logbook()
        else:
            values = self.state.settings()
        frame = bytearray(encode_frame(kind, self.spec.protocol, values, counter))
        if self.faults.fire("bad-crc", self.address):
            frame[-1] ^= 0x5A
        self._send(bytes(frame), kind)

    def _send(self, data: bytes, kind: str) -> None:
        self._queue.put_nowait(Transmission(data, kind))
        if self._sender is None or self._sender.done():
            self._sender = _start(self._send_loop())

    async def _cell_stream(self) -> None:
        while True:
            await asyncio.sleep(max(self.timing.cell_period_s, 0.01))
            self._send_frame("cell_info", counter=self._next_counter())

    async def _at_noise(self) -> None:
        while True:
            await asyncio.sleep(max(self.timing.at_noise_s, 0.01))
            self._send(AT_NOISE, "noise")

    # ---- the radio ------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        await asyncio.sleep(self.timing.reply_s)
        while not self._queue.empty():
            item = self._queue.get_nowait()
            data = item.data
            junk = self.faults.active("junk", self.address)
            if junk and item.kind in ("device_info", "settings") and not self._queue.empty():
                # 14.x+ glue the 0xC8 ack (and AT) to the end of a reply (docs/protocol.md 3.4).
                nxt = self._queue.get_nowait()
                data += nxt.data + (AT_NOISE if nxt.kind == "ack" else b"")
            chunks = list(self._chunks(data, junk))
            drop_at = None
            if item.kind == "cell_info" and self.faults.fire("drop-mid-frame", self.address):
                drop_at = max(1, len(chunks) // 2)
            for index, chunk in enumerate(chunks):
                if index == drop_at:
                    await self._drop()
                    return
                self._notify(chunk)
                await self._pace()
            if item.kind in ("device_info", "settings", "cell_info", "logbook"):
                self.frames_sent += 1

    async def _pace(self) -> None:
        gap = self.timing.chunk_s
        if self.faults.active("slow", self.address):
            gap = self.timing.slow_chunk_s
        await asyncio.sleep(gap)

    def _chunks(self, data: bytes, junk: bool) -> Iterator[bytes]:
        size = self.spec.profile.mtu - 3
        if junk:
            # Borders anywhere, even inside the ack (the B5A24S capture, docs/protocol.md 1.4).
            pos = 0
            while pos < len(data):
                step = self._rng.randint(7, size)
                yield data[pos : pos + step]
                pos += step
            return
        burst = self.spec.profile.burst
        for start in range(0, len(data), burst):
            piece = data[start : start + burst]
            for offset in range(0, len(piece), size):
                yield piece[offset : offset + size]


def _start(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    task = asyncio.get_running_loop().create_task(coro)
    task.add_done_callback(_report)
    return task


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("sim: emulated BMS task failed", exc_info=task.exception())
