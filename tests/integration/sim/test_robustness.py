"""Whatever a client sends, the simulator answers with a reply or a named error and survives."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.bluez import SimHandle
from tests.integration.sim.client import ADDRESS, CHAR, DEV

pytestmark = pytest.mark.integration

PATHS = ["/", "/org", "/org/bluez", "/org/bluez/hci0", DEV, CHAR, CHAR + "/desc0013",
         DEV + "/service0010", "/org/bluezjk/simulator", "/org/bluez/hci7", "/nope"]  # fmt: skip
INTERFACES = [
    "org.bluez.Adapter1", "org.bluez.Device1", "org.bluez.GattCharacteristic1",
    "org.bluez.GattDescriptor1", "org.bluez.GattService1", "org.bluezjk.Simulator1",
    "org.freedesktop.DBus.Properties", "org.freedesktop.DBus.Introspectable",
    "org.freedesktop.DBus.ObjectManager", "org.freedesktop.DBus.Peer", "org.example.Nope",
]  # fmt: skip
MEMBERS = [
    "Connect", "Disconnect", "StartNotify", "StopNotify", "AcquireNotify", "AcquireWrite",
    "ReadValue", "WriteValue", "StartDiscovery", "StopDiscovery", "SetDiscoveryFilter",
    "RemoveDevice", "Get", "GetAll", "Set", "GetManagedObjects", "Introspect", "Ping",
    "SetFault", "ClearFaults", "SetState", "GetDevice", "GetLog", "DropLink", "AddDevice",
    "Nope",
]  # fmt: skip
# D-Bus strings are UTF-8 without NUL: anything else cannot even be sent.
_TEXT = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=20)
_VARIANT = st.one_of(
    st.booleans().map(lambda v: Variant("b", v)),
    st.integers(-(2**31), 2**31 - 1).map(lambda v: Variant("i", v)),
    st.integers(-(2**15), 2**15 - 1).map(lambda v: Variant("n", v)),
    _TEXT.map(lambda v: Variant("s", v)),
    st.binary(max_size=30).map(lambda v: Variant("ay", v)),
    st.lists(st.floats(-10, 10), max_size=4).map(lambda v: Variant("ad", v)),
)
_DICT = st.dictionaries(
    st.sampled_from(["type", "offset", "Transport", "UUIDs", "RSSI", "current", "x"]),
    _VARIANT,
    max_size=3,
)
BODIES: dict[str, Any] = {
    "": st.just([]),
    "s": st.tuples(st.one_of(_TEXT, st.sampled_from([*INTERFACES, ADDRESS]))),
    "ss": st.tuples(st.sampled_from(INTERFACES), st.sampled_from(["Powered", "Value", "x"])),
    "ssv": st.tuples(st.sampled_from(INTERFACES), st.sampled_from(["Powered", "Alias"]), _VARIANT),
    "a{sv}": st.tuples(_DICT),
    "aya{sv}": st.tuples(st.binary(max_size=40), _DICT),
    "o": st.tuples(st.sampled_from([*PATHS, "/org/bluez/hci0/dev_C8_47_80_37_02_E8"])),
    "sus": st.tuples(
        st.one_of(_TEXT, st.sampled_from(["junk", "slow", "in-progress", "notify-acquired"])),
        st.integers(0, 5),
        st.sampled_from(["", ADDRESS, "bad"]),
    ),
    "sa{sv}": st.tuples(st.sampled_from([ADDRESS, "x"]), _DICT),
    "sb": st.tuples(st.sampled_from(["hci0", "hci1"]), st.booleans()),
}
HCI0 = "/org/bluez/hci0"
ADAPTER = "org.bluez.Adapter1"
GATT = "org.bluez.GattCharacteristic1"
PROPS = "org.freedesktop.DBus.Properties"
CONTROL = ("/org/bluezjk/simulator", "org.bluezjk.Simulator1")
# Real methods with their signatures, so that most calls get past the signature check.
METHODS = [
    (HCI0, ADAPTER, "StartDiscovery", ""), (HCI0, ADAPTER, "StopDiscovery", ""),
    (HCI0, ADAPTER, "SetDiscoveryFilter", "a{sv}"), (HCI0, ADAPTER, "RemoveDevice", "o"),
    (DEV, "org.bluez.Device1", "Connect", ""), (DEV, "org.bluez.Device1", "Disconnect", ""),
    (CHAR, GATT, "ReadValue", "a{sv}"), (CHAR, GATT, "WriteValue", "aya{sv}"),
    (CHAR, GATT, "StartNotify", ""), (CHAR, GATT, "StopNotify", ""),
    (CHAR, GATT, "AcquireNotify", "a{sv}"), (CHAR, GATT, "AcquireWrite", "a{sv}"),
    (CHAR + "/desc0013", "org.bluez.GattDescriptor1", "WriteValue", "aya{sv}"),
    (CHAR + "/desc0013", "org.bluez.GattDescriptor1", "ReadValue", "a{sv}"),
    (DEV, PROPS, "Get", "ss"), (HCI0, PROPS, "GetAll", "s"), (HCI0, PROPS, "Set", "ssv"),
    (*CONTROL, "SetFault", "sus"), (*CONTROL, "ClearFaults", "ss"),
    (*CONTROL, "SetState", "sa{sv}"), (*CONTROL, "GetDevice", "s"),
    (*CONTROL, "DropLink", "s"), (*CONTROL, "SetAdapterPresent", "sb"),
]  # fmt: skip
_VALID = st.sampled_from(METHODS).flatmap(
    lambda m: st.tuples(
        st.just(m[0]), st.just(m[1]), st.just(m[2]), st.just(m[3]), BODIES[m[3]].map(list)
    )
)
_RANDOM = st.sampled_from(sorted(BODIES)).flatmap(
    lambda sig: st.tuples(
        st.sampled_from(PATHS),
        st.sampled_from(INTERFACES),
        st.sampled_from(MEMBERS),
        st.just(sig),
        BODIES[sig].map(list),
    )
)
CALLS = st.one_of(_VALID, _VALID, _VALID, _RANDOM)


async def _call_all(
    address: str, calls: list[tuple[str, str, str, str, list[Any]]]
) -> list[Message]:
    bus = await MessageBus(bus_address=address, negotiate_unix_fd=True).connect()
    try:
        replies = []
        for path, iface, member, sig, body in calls:
            msg = Message(destination="org.bluez", path=path, interface=iface, member=member,
                          signature=sig, body=body)  # fmt: skip
            reply = await asyncio.wait_for(bus.call(msg), 10)
            assert reply is not None
            for fd in reply.unix_fds:
                os.close(fd)
            replies.append(reply)
        return replies
    finally:
        bus.disconnect()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(calls=st.lists(CALLS, min_size=1, max_size=6))
def test_any_call_gets_a_named_answer(sim: SimHandle, calls: list[Any]) -> None:
    replies = asyncio.run(_call_all(sim.bus_address, calls))
    for reply in replies:
        assert reply.message_type in (MessageType.METHOD_RETURN, MessageType.ERROR)
        # The dispatcher's catch-all for simulator bugs answers ...DBus.Error.Failed.
        assert reply.error_name != "org.freedesktop.DBus.Error.Failed", reply.body
    sim.set_adapter_present("hci0", True)
    assert sim.faults_armed() is not None  # the simulator is still answering
