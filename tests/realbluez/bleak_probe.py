"""An unmodified Bleak reading one JK-BMS: `python -m tests.realbluez.bleak_probe MAC ADAPTER`.

Prints one JSON object: how many 0x55AA frames came back and of which types. The real-BlueZ
tier runs it against the same peripheral as our reader, to tell a rig problem from a client
problem.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from bleak import BleakClient, BleakScanner

from bluez_jk.protocol import Assembler, command

FFE1 = "0000ffe1-0000-1000-8000-00805f9b34fb"


async def probe(address: str, adapter: str) -> dict[str, object]:
    t0 = time.monotonic()
    device = await BleakScanner.find_device_by_address(address, timeout=20.0, adapter=adapter)
    if device is None:
        return {"frames": 0, "summary": "not found in a 20 s scan"}
    assembler = Assembler()
    kinds: list[int] = []
    done = asyncio.Event()

    def on_data(_char: object, data: bytearray) -> None:
        for frame in assembler.feed(bytes(data)):
            kinds.append(frame[4])
            if 0x03 in kinds and 0x02 in kinds:
                done.set()

    async with BleakClient(device, timeout=40.0) as client:
        await client.start_notify(FFE1, on_data)
        await client.write_gatt_char(FFE1, command(0x97), response=False)
        await asyncio.sleep(0.5)
        await client.write_gatt_char(FFE1, command(0x96), response=False)
        try:
            await asyncio.wait_for(done.wait(), 30.0)
        finally:
            await client.stop_notify(FFE1)
    took = time.monotonic() - t0
    return {
        "frames": len(kinds),
        "types": sorted(set(kinds)),
        "summary": f"ok, {len(kinds)} frames in {took:.1f} s",
    }


def main() -> None:
    try:
        result = asyncio.run(probe(sys.argv[1], sys.argv[2]))
        code = 0 if result["frames"] else 1
    except Exception as exc:
        result, code = {"frames": 0, "summary": f"{type(exc).__name__}: {exc}"}, 1
    print(json.dumps(result))
    sys.exit(code)


if __name__ == "__main__":
    main()
