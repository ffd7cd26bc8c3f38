"""Pairing scenarios (JK firmware >= 19.30 wants a bonded link): the reader pairs through its
own agent, a wrong passkey fails with the reason, a lost bond is re-paired once, a bond is
used without pairing again."""

from __future__ import annotations

import time
from typing import Any

from bluez_jk.bluez.agent import Passkey
from bluez_jk.reader import Reader
from tests.realbluez.guest_boards import PASSKEY
from tests.realbluez.scenarios import (
    Outcome,
    Rig,
    error_of,
    labelled,
    read_timeout,
    request,
    settle_leftovers,
    system_bus,
)


def _pairings(rig: Rig, address: str) -> int | None:
    counter = getattr(rig, "pairings", None)
    return counter(address) if counter is not None else None


async def _left(rig: Rig, address: str) -> list[str]:
    bus = await system_bus(rig)
    try:
        return await settle_leftovers(bus, address)
    finally:
        bus.disconnect()


async def just_works(rig: Rig) -> Outcome:
    """A BMS that pairs "just works": the first read pairs, 20 more use the bond."""
    bms = rig.bms["jk8"]
    t0 = time.monotonic()
    async with Reader() as reader:
        first = await reader.read(request(bms, timeout_s=read_timeout(rig)))
        after_first = _pairings(rig, bms.address)
        failures = []
        for _ in range(20):
            reading = await reader.read(request(bms, timeout_s=read_timeout(rig)))
            if reading.get("error") is not None or reading.get("paired") is not True:
                failures.append(error_of(reading))
    pairings = _pairings(rig, bms.address)
    left = await _left(rig, bms.address)
    ok = first.get("error") is None and first.get("paired") is True and not failures
    ok = ok and (pairings is None or pairings == after_first == 1) and not left
    summary = (
        f"first read {error_of(first)} paired={first.get('paired')}; 20 bonded reads: "
        f"{20 - len(failures)} ok; pairings seen by the BMS: {pairings}"
    )
    return Outcome(label_of_just_works, ok, summary, time.monotonic() - t0, {"failures": failures})


async def passkey(rig: Rig) -> Outcome:
    """Passkey entry: a wrong passkey is PairingFailed with the hint, the right one reads."""
    bms = rig.bms["jk9"]
    timeout = read_timeout(rig)
    t0 = time.monotonic()
    async with Reader() as reader:
        wrong = await reader.read(request(bms, timeout_s=timeout, passkey=Passkey(111111)))
        took_wrong = time.monotonic() - t0
        right = await reader.read(request(bms, timeout_s=timeout, passkey=Passkey(PASSKEY)))
    err: dict[str, Any] = wrong.get("error") or {}
    secret_shown = any(str(v) in str(r) for r in (wrong, right) for v in (111111, PASSKEY))
    ok = (
        err.get("type") == "PairingFailed"
        and "bluetoothctl remove" in err.get("message", "")
        and took_wrong <= timeout + 6
        and right.get("error") is None
        and right.get("paired") is True
        and not secret_shown
    )
    summary = (
        f"wrong passkey: {error_of(wrong)} in {took_wrong:.1f} s; right passkey: "
        f"{error_of(right)} paired={right.get('paired')}"
    )
    return Outcome(label_of_passkey, ok, summary, time.monotonic() - t0, {"wrong": err})


async def lost_bond(rig: Rig) -> Outcome:
    """The BMS forgets the bond: BlueZ's half is removed and the BMS paired again, once.

    bluetoothd 5.66 crashes on the first connect to a bonded BMS that forgot the bond
    (docs/bluez.md fact 19), in every run of the rig since its adapters have addresses of
    their own. The reader then answers BluetoothdGone and remembers the BMS; the scenario
    restarts bluetoothd, as D-Bus activation or a user would, and the next read of the same
    Reader (the gateway keeps one) removes the stale bond, pairs once and completes, without
    a second crash. Where bluetoothd survives (the simulator) the first read does all that."""
    bms = rig.bms["jk8"]
    forget = getattr(rig, "forget_bond", None)
    if forget is None:
        return Outcome(label_of_lost_bond, False, "this rig cannot make the BMS forget")
    # The check reads jk9 beside it: the scenario starts from an adapter that connects.
    notes = await wait_alive(rig)
    neighbour = rig.bms["jk9"]
    check = request(neighbour, timeout_s=read_timeout(rig), passkey=Passkey(PASSKEY))
    async with Reader() as reader:
        first = await reader.read(check)
        if first.get("error") is not None:
            await reader.power_cycle(bms.adapter)
            again = await reader.read(check)
            notes.append(
                f"before: {neighbour.name} read {error_of(first)}, {bms.adapter} "
                f"power-cycled, read {error_of(again)}"
            )
    before = _pairings(rig, bms.address)
    await forget(bms.address)
    t0 = time.monotonic()
    crashes = 0
    async with Reader() as reader:
        first = reading = await reader.read(request(bms, timeout_s=read_timeout(rig)))
        notes.append(f"first read {error_of(reading)}")
        if await _revived(rig, notes):
            crashes += 1
            reading = await reader.read(request(bms, timeout_s=read_timeout(rig)))
            notes.append(f"second read {error_of(reading)}")
            crashes += await _revived(rig, notes)
    took = time.monotonic() - t0
    after = _pairings(rig, bms.address)
    repaired = None if before is None or after is None else after - before
    first_err: dict[str, Any] = first.get("error") or {}
    named = first_err.get("type") is None or (
        first_err.get("type") == "BusError" and "forgot the bond" in first_err.get("message", "")
    )
    ok = (
        reading.get("error") is None
        and (repaired is None or repaired == 1)
        and crashes <= 1
        and named
    )
    summary = "; ".join(notes) + f"; pairings: {repaired}"
    return Outcome(
        label_of_lost_bond, ok, summary, took, {"error": reading.get("error"), "first": first_err}
    )


async def _revived(rig: Rig, notes: list[str]) -> bool:
    """bluetoothd crashed: restart it (the rig's systemd) and wait for its adapters."""
    if rig.bluez_alive():
        return False
    notes.append("bluetoothd crashed, restarted")
    await rig.restart_bluez()  # type: ignore[attr-defined]
    notes.extend(await wait_alive(rig))
    return True


async def wait_alive(rig: Rig) -> list[str]:
    """bluetoothd is back and has its adapters again; what that took beyond waiting."""
    waiter = getattr(rig, "wait_adapters", None)
    return list(await waiter()) if waiter is not None else []


label_of_just_works = "pairing: just works, then 20 reads on the bond (jk8)"
label_of_passkey = "pairing: wrong passkey, then the right one (jk9)"
label_of_lost_bond = "pairing: the BMS forgot the bond, one re-pair (jk8)"
labelled(label_of_just_works, just_works)
labelled(label_of_passkey, passkey)
labelled(label_of_lost_bond, lost_bond)


def all_pairing() -> list[Any]:
    """What runs beside the gateway; `lost_bond` runs after it (it crashes bluetoothd 5.66)."""
    return [just_works, passkey]
