"""The same scenarios against our D-Bus simulator: the fast tier's column of the table."""

from __future__ import annotations

import asyncio
import os

from tests.fixtures.bluez import SimHandle
from tests.realbluez.guest_boards import BOARDS, PAIRING
from tests.realbluez.scenarios import Bms


class SimRig:
    kind = "sim"

    def __init__(self, handle: SimHandle, lock_dir: str) -> None:
        self.handle = handle
        self.bms = {
            name: Bms(name, spec.address, spec.adapter, spec.protocol)
            for name, spec in BOARDS.items()
        }
        self.env = dict(handle.env, BLUEZ_JK_LOCK_DIR=lock_dir, PYTHONPATH=os.getcwd())

    @staticmethod
    def device_args() -> list[str]:
        return [
            f"{s.address},adapter={s.adapter},protocol={s.protocol},name={s.name},"
            f"cells={s.cells},layout={s.layout},pairing={PAIRING.get(name, 'none')}"
            for name, s in BOARDS.items()
        ]

    async def fault(self, name: str, address: str, on: bool) -> None:
        if on:
            count = 1 if name == "drop-mid-frame" else None
            await asyncio.to_thread(self.handle.set_fault, name, count, address)
        else:
            await asyncio.to_thread(self.handle.clear_faults, name, address)

    async def vanish(self, address: str) -> None:
        await asyncio.to_thread(self.handle.set_fault, "not-advertising", None, address)
        await asyncio.to_thread(self.handle.drop_link, address)

    async def forget_bond(self, address: str) -> None:
        await asyncio.to_thread(self.handle.forget_bond, address)

    def pairings(self, address: str) -> int | None:
        return sum(
            1 for e in self.handle.log() if e["event"] == "paired" and e["address"] == address
        )

    async def restart_bluez(self) -> None:
        await asyncio.to_thread(self.handle.restart)

    async def wait_adapters(self) -> list[str]:
        return []

    def bluez_alive(self) -> bool:
        return self.handle.proc is not None and self.handle.proc.poll() is None

    async def appear(self, address: str) -> None:
        await asyncio.to_thread(self.handle.clear_faults, "not-advertising", address)
