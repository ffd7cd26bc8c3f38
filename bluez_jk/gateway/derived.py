"""What the gateway derives from readings: Victron output per battery and per bank, and the
banks' own topics (docs/mqtt.md, "`<base>/jk/<name>/victron`" and "Banks").

Kept out of service.py on purpose: the service hands every reading in (`on_reading`) and
calls `tick` every TICK_S, and publishes the `Message`s it gets back. Nothing here does I/O;
time is the scheduler's monotonic clock, passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from bluez_jk.gateway import discovery
from bluez_jk.gateway.bank import BankView, Member, aggregate
from bluez_jk.gateway.charge_control import ChargeController, ChargeSettings, Limits, Number
from bluez_jk.gateway.config import GatewayConfig
from bluez_jk.gateway.victron import to_victron
from bluez_jk.gateway.victron_config import BankConfig

# How often stale data is looked for and the Victron JSON repeated when no read came in: the
# driver disconnects the battery after `timeout` s (60 by default) without a message.
TICK_S = 5.0


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retained: bool = False
    device: str | None = None  # the device's own link; None = the gateway's link


@dataclass
class _Pack:
    controller: ChargeController
    victron: bool
    metrics: dict[str, Number] | None = None
    warnings: Mapping[str, bool] | None = None
    online: bool = False
    limits: Limits | None = None
    published_at: float | None = None


class DerivedOutputs:
    def __init__(
        self,
        config: GatewayConfig,
        topic: Callable[[str, str], str],
        dumps: Callable[[Any], bytes],
        *,
        publish_discovery: Callable[[str, dict[str, str]], None] | None = None,
        node_id: str = "",
    ) -> None:
        self.config = config
        self.topic = topic
        self.dumps = dumps
        self.publish_discovery = publish_discovery
        self.node_id = node_id
        self.banks: tuple[BankConfig, ...] = config.banks
        in_bank = {member for bank in self.banks for member in bank.members}
        self.packs: dict[str, _Pack] = {
            d.name: _Pack(ChargeController(d.victron.settings), d.victron.enabled)
            for d in config.devices
            if d.victron.enabled or d.name in in_bank
        }
        self._bank_published: dict[str, float] = {}
        self._bank_fresh: dict[str, tuple[str, ...]] = {}
        self._discovered: dict[str, frozenset[str]] = {}

    @property
    def active(self) -> bool:
        return bool(self.packs)

    def bank_names(self) -> set[str]:
        return {bank.name for bank in self.banks}

    def on_reading(
        self,
        name: str,
        metrics: Mapping[str, Number] | None,
        warnings: Mapping[str, bool],
        now: float,
    ) -> list[Message]:
        """A read of device `name` ended: `metrics` on success, None on failure."""
        pack = self.packs.get(name)
        if pack is None:
            return []
        pack.online = metrics is not None
        if metrics is not None:
            pack.metrics = dict(metrics)
            pack.warnings = dict(warnings)
            pack.limits = pack.controller.feed(metrics, now)
        else:
            pack.limits = pack.controller.tick(now)
        out = self._pack_victron(name, pack, now)
        for bank in self.banks:
            if name in bank.members:
                out.extend(self._bank_messages(bank, now))
        return out

    def tick(self, now: float) -> list[Message]:
        """Repeat what went quiet; a member that turned stale changes its bank at this tick."""
        out: list[Message] = []
        for name, pack in self.packs.items():
            if pack.published_at is None or now - pack.published_at >= TICK_S:
                pack.limits = pack.controller.tick(now)
                out.extend(self._pack_victron(name, pack, now))
        for bank in self.banks:
            fresh = self._fresh_members(bank, now)
            last = self._bank_published.get(bank.name)
            if fresh != self._bank_fresh.get(bank.name) or last is None or now - last >= TICK_S:
                out.extend(self._bank_messages(bank, now))
        return out

    def offline(self) -> list[Message]:
        """At a clean shutdown: every bank offline."""
        return [
            Message(self.topic(bank.name, "online"), b"false", retained=True) for bank in self.banks
        ]

    def startup(self) -> list[Message]:
        """Banks are offline until every member has read successfully."""
        return self.offline()

    # -- internals ----------------------------------------------------------------------------

    def _pack_victron(self, name: str, pack: _Pack, now: float) -> list[Message]:
        if not pack.victron:
            return []
        limits = pack.limits or pack.controller.tick(now)
        payload = to_victron(
            pack.metrics or {}, pack.warnings or {}, limits, pack.controller.settings
        )
        pack.published_at = now
        return [Message(self.topic(name, "victron"), self.dumps(payload), device=name)]

    def _fresh_members(self, bank: BankConfig, now: float) -> tuple[str, ...]:
        return tuple(m for m in bank.members if not self.packs[m].controller.stale(now))

    def _view(self, bank: BankConfig, now: float) -> BankView:
        members = []
        for name in bank.members:
            pack = self.packs[name]
            limits = pack.controller.tick(now)
            pack.limits = limits
            members.append(
                Member(
                    name,
                    pack.metrics,
                    pack.online,
                    limits,
                    pack.warnings or {},
                    pack.controller.settings.temperature_probes,
                )
            )
        return aggregate(bank.name, members)

    def bank_settings(self, bank: BankConfig) -> ChargeSettings:
        """The members' settings with the current maxima summed: a bank's alarm thresholds."""
        first = self.packs[bank.members[0]].controller.settings
        charge = sum(self.packs[m].controller.settings.max_charge_current_a for m in bank.members)
        discharge = sum(
            self.packs[m].controller.settings.max_discharge_current_a for m in bank.members
        )
        return replace(first, max_charge_current_a=charge, max_discharge_current_a=discharge)

    def _bank_messages(self, bank: BankConfig, now: float) -> list[Message]:
        view = self._view(bank, now)
        self._bank_published[bank.name] = now
        self._bank_fresh[bank.name] = self._fresh_members(bank, now)
        out = [
            Message(self.topic(bank.name, "raw"), self.dumps(view.status)),
            Message(
                self.topic(bank.name, "online"),
                b"true" if view.online else b"false",
                retained=True,
            ),
        ]
        if view.metrics.get("members_fresh"):
            out.insert(1, Message(self.topic(bank.name, "metrics"), self.dumps(view.metrics)))
        if bank.victron:
            payload = to_victron(
                view.metrics,
                view.warnings,
                view.limits,
                self.bank_settings(bank),
                modules=view.modules,
                extremes=view.extremes,
            )
            out.append(Message(self.topic(bank.name, "victron"), self.dumps(payload)))
        self._discover(bank, view)
        return out

    def _discover(self, bank: BankConfig, view: BankView) -> None:
        ha = self.config.homeassistant
        if (
            not ha.enabled
            or self.publish_discovery is None
            or not view.metrics.get("members_fresh")
        ):
            return
        keys = frozenset(view.metrics)
        if self._discovered.get(bank.name) == keys:
            return
        self._discovered[bank.name] = keys
        base = self.config.mqtt.base_topic
        configs = discovery.bank_discovery_configs(
            bank.name,
            keys,
            members=bank.members,
            base_topic=base,
            prefix=ha.prefix,
            node_id=self.node_id,
        )
        self.publish_discovery(bank.name, configs)
