"""The emulated JK-BMS as a real BLE peripheral: bumble controllers on one virtual radio link.

The same BMS model as the D-Bus simulator (`bluez_jk.sim.jkbms.JkBms`, frames from
`bluez_jk.protocol.encode_frame`, the GATT layouts of `bluez_jk.sim.gatt.layout`), carried
over a second transport: a bumble GATT server whose radio is a bumble `LocalLink`. The
kernel sees the far end of that link through `/dev/vhci` as an ordinary HCI controller, so
real bluetoothd and the real kernel Bluetooth stack sit between the client and this BMS.

Peer-side faults (the `FaultSet` names of the simulator where the meaning is the same):
`not-advertising` (stops advertising; an existing link stays), `drop-mid-frame`, `silent`,
`slow`, `auth-required` (the CCCD write is refused with Insufficient Authentication), and
`vanish()` / `appear()` (the board is powered off and on again).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from typing import Any

from bumble import hci
from bumble.att import ATT_Error, ErrorCode
from bumble.controller import Controller
from bumble.core import AdvertisingData, PhysicalTransport
from bumble.device import Connection, Device
from bumble.gatt import (
    GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR,
    Characteristic,
    CharacteristicValue,
    Descriptor,
    Service,
)
from bumble.link import LocalLink
from bumble.pairing import PairingConfig, PairingDelegate

from bluez_jk.sim.devices import DeviceSpec
from bluez_jk.sim.faults import FaultSet, make_fault
from bluez_jk.sim.gatt import CharSpec, layout
from bluez_jk.sim.jkbms import JkBms
from bluez_jk.sim.timing import TIMINGS

log = logging.getLogger("realbluez.peer")

# The rig's adapters (hciN gets ...:0N); a locally administered block no board uses.
HOST_ADDRESS_PREFIX = "0A:B1:0E:00:00"

# bumble's controller answers a host that scans with legacy commands with *extended*
# advertising reports (plus a made-up scan response) whenever it claims LE Extended
# Advertising. No real controller mixes the two; Linux 6.1 then loses track of its own LE
# connection attempt: it sends LE Create Connection Cancel ~4 s into a link that is already
# up, never sends HCI Disconnect for it, and answers every later connect with EBUSY (the
# first contact's failure). Host-side controllers therefore claim neither feature.
_HOST_FEATURES_OFF = hci.LeFeatureMask.LE_EXTENDED_ADVERTISING | hci.LeFeatureMask.LL_PRIVACY

# A connection whose other end has forgotten it ends after this long (`RigLink`); JK modules
# and Linux agree on supervision timeouts of a few seconds.
SUPERVISION_TIMEOUT_S = 4.0


class RigLink(LocalLink):
    """bumble's `LocalLink`, with LE data sent from the address its connection uses, and a
    supervision timeout.

    bumble 0.0.236 tags every LE packet with the sender's *random* address, whatever address
    the connection was made with; the receiver looks the connection up by it. That only
    works while every central connects with its random address. The rig's adapters have
    public addresses (`host_controller`) and Linux connects with those, so the source must
    be the connection's own address (the scan's random address is another one).

    On the air a link whose other end has gone quiet ends on both sides after the
    supervision timeout; bumble's link keeps a connection until a TerminateInd arrives. When
    one end forgot a connection without telling the other (an event the kernel refused while
    the controller was down, a controller reset), the other end stayed connected for good: a
    board that never advertised again, an adapter whose every Connect to it hung. `supervise`
    ends such a half connection as a radio would."""

    def __init__(self) -> None:
        super().__init__()
        self._alone_since: dict[tuple[int, int, str], float] = {}
        self.supervision_timeouts = 0

    async def supervise(self) -> None:
        """Check every connection once a second; runs until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            self.check_supervision(loop.time())

    def check_supervision(self, now: float) -> None:
        alone: dict[tuple[int, int, str], float] = {}
        for controller in list(self.controllers):
            for connection in list(controller.le_connections.values()):
                if self._other_end(controller, connection):
                    continue
                key = (id(controller), connection.handle, str(connection.peer_address))
                since = self._alone_since.get(key, now)
                if now - since < SUPERVISION_TIMEOUT_S:
                    alone[key] = since
                    continue
                log.warning(
                    "%s: supervision timeout of its link to %s (the other end forgot it)",
                    controller.name,
                    connection.peer_address,
                )
                self.supervision_timeouts += 1
                controller.on_le_disconnected(
                    connection, hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR
                )
        self._alone_since = alone

    def _other_end(self, controller: Controller, connection: Any) -> bool:
        for other in self.controllers:
            if other is controller:
                continue
            theirs = other.le_connections.get(connection.self_address)
            if theirs is not None and theirs.self_address == connection.peer_address:
                return True
        return False

    def send_acl_data(
        self,
        sender_controller: Controller,
        destination_address: hci.Address,
        transport: PhysicalTransport,
        data: bytes,
    ) -> None:
        connection = sender_controller.le_connections.get(destination_address)
        if transport != PhysicalTransport.LE or connection is None:
            super().send_acl_data(sender_controller, destination_address, transport, data)
            return
        receiver = self.find_le_controller(destination_address)
        if receiver is not None:
            source = connection.self_address
            asyncio.get_running_loop().call_soon(receiver.on_link_acl_data, source, transport, data)


class HostController(Controller):
    """A host-side controller that can wedge (the rig's `adapter-wedged`): it takes every LE
    Create Connection and never completes one, so the kernel's connect times out, until the
    host resets it - what a power cycle through Adapter1.Powered does (the kernel sends
    HCI_Reset when it powers a controller on)."""

    wedged = False
    _held: Any = None  # the LE Create Connection the wedge keeps pending

    def create_le_connection(self, peer_address: hci.Address) -> None:
        if self.wedged:
            # Pending until the kernel gives up and cancels it.
            self._held = self.pending_le_connection
            return
        super().create_le_connection(peer_address)

    def on_hci_le_create_connection_cancel_command(
        self, command: hci.HCI_LE_Create_Connection_Cancel_Command
    ) -> Any:
        """As a controller must (Core Vol 4 Part E 7.8.13). bumble 0.0.236's own cancel answers
        success and does nothing else: the connection stays pending, so the next LE Create
        Connection on this controller is refused (Command Disallowed), the cancelled board's
        next advert connects it to a central that has given up, and without the completion
        event below the kernel waits out its connect timeout with the controller's command
        queue held. On a slow machine a gateway read that timed out in Connect left hci1 so
        ("Connect got no reply within 30.0 s" for every board on it, then offline)."""
        self._held = None
        pending = self.pending_le_connection
        if pending is None:
            # Already connected, or never asked: the host must disconnect instead.
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None
        # After the Command Complete: LE Connection Complete, Unknown Connection Identifier.
        asyncio.get_running_loop().call_soon(self._cancelled, pending)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)

    def _cancelled(self, held: Any) -> None:
        self.send_hci_packet(
            hci.HCI_LE_Connection_Complete_Event(
                status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
                connection_handle=0,
                role=0,
                peer_address_type=held.peer_address_type,
                peer_address=held.peer_address,
                connection_interval=0,
                peripheral_latency=0,
                supervision_timeout=0,
                central_clock_accuracy=0,
            )
        )

    def on_hci_reset_command(self, command: hci.HCI_Reset_Command) -> Any:
        """A reset ends the Link Layer's connections (Core Vol 4 Part E 7.3.2), without an
        event to the host, which has forgotten them too; the boards notice by supervision
        timeout (`RigLink`). bumble's own reset keeps every connection."""
        if self.wedged:
            log.warning("%s reset: no longer wedged", self.name)
        self.wedged = False
        self._held = None
        self.pending_le_connection = None
        self.le_connections.clear()
        return super().on_hci_reset_command(command)


class VhciSink:
    """What the controller sends to the kernel through `/dev/vhci`, written straight to the fd.

    The kernel refuses a packet for a controller that is not up (`hci_recv_frame` answers
    ENXIO: bluetoothd powered it off as it exited, and an advertising report or a
    disconnection event came after that). A real USB or UART driver drops such a packet and
    goes on. bumble's file transport writes through an asyncio pipe, which closes for good
    on the first failed write: the controller was then cut off from the kernel, and the next
    bluetoothd never took it up again (CI: hci0 or hci1 missing after a restart, 70,000
    "pipe closed by peer" warnings). Here the refused packet is dropped and counted."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.dropped = 0

    def on_packet(self, packet: bytes) -> None:
        try:
            os.write(self.fd, packet)
        except OSError as err:
            if err.errno != errno.ENXIO:
                raise
            self.dropped += 1


def vhci_sink(transport: Any) -> VhciSink:
    """A `VhciSink` on the fd of a transport from `open_transport("vhci")`."""
    return VhciSink(transport.sink.transport.get_extra_info("pipe").fileno())


def host_controller(
    name: str, index: int, source: Any, sink: Any, link: LocalLink
) -> HostController:
    """The controller the kernel gets through vhci (hciN inside the VM).

    With a public address of its own, as every real dongle and Pi controller has. bumble's
    default is 00:00:00:00:00:00: bluetoothd then gives each adapter a static random address
    from /var/lib/bluetooth/addresses in the order the adapters register, which after a
    restart of bluetoothd is another order - the bonds (stored per adapter address) moved
    to other adapters and for a while two controllers on the link answered to one address."""
    controller = HostController(
        name,
        host_source=source,
        host_sink=sink,
        link=link,
        public_address=f"{HOST_ADDRESS_PREFIX}:{index:02X}",
    )
    controller.le_features = controller.le_features & ~_HOST_FEATURES_OFF
    return controller


def _properties(spec: CharSpec) -> Characteristic.Properties:
    names = {
        "read": Characteristic.Properties.READ,
        "write": Characteristic.Properties.WRITE,
        "write-without-response": Characteristic.Properties.WRITE_WITHOUT_RESPONSE,
        "notify": Characteristic.Properties.NOTIFY,
        "indicate": Characteristic.Properties.INDICATE,
    }
    flags = Characteristic.Properties(0)
    for flag in spec.flags:
        flags |= names[flag]
    return flags


class PeerBms:
    """One JK-BMS board: its own bumble controller on `link`, advertising under its name."""

    def __init__(
        self, spec: DeviceSpec, link: LocalLink, timing: str = "real", pairing: str = "none"
    ) -> None:
        self.spec = spec
        # none | justworks | passkey:NNNNNN: what JK firmware >= 19.30 asks of its central.
        self.pairing = pairing
        self.pairings = 0  # completed pairings (the tier counts re-pairs with it)
        self.faults = FaultSet()
        self.controller = Controller(f"bms-{spec.address}", link=link)
        self.device = Device.with_hci(
            spec.display_name, hci.Address(spec.address), self.controller, self.controller
        )
        self.device.gatt_server.max_mtu = spec.profile.mtu
        self.bms = JkBms(spec, TIMINGS[timing], self.faults, self._notify, self._drop)  # type: ignore[index]
        self.connection: Connection | None = None
        self.subscribed = False
        self.connections = 0
        self.cccd_writes = 0
        self.writes = 0
        self.advertising = False
        self._notify_char: Characteristic[Any] | None = None
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None
        # Every change of advertising goes through `_sync_advertising` under this lock, which
        # decides from the state at that moment: a restart after a disconnect that is still
        # in flight when a fault says "stop" is followed by the stop instead of outliving it.
        self._advertising_lock = asyncio.Lock()
        self._build_gatt()
        self.device.on("connection", self._on_connection)
        if pairing != "none":
            self.device.pairing_config_factory = self._pairing_config

    def _pairing_config(self, _connection: Connection) -> PairingConfig:
        if self.pairing.startswith("passkey:"):
            # A board set up with a fixed passkey: it "displays" it, the central types it.
            delegate = _FixedPasskey(int(self.pairing.split(":", 1)[1]))
            return PairingConfig(sc=True, mitm=True, bonding=True, delegate=delegate)
        return PairingConfig(
            sc=True,
            mitm=False,
            bonding=True,
            delegate=PairingDelegate(PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT),
        )

    async def forget_bond(self) -> None:
        """The BMS loses its half of the bond (reset, or paired with another host)."""
        if self.device.keystore is not None:
            await self.device.keystore.delete_all()

    # ---- GATT ----------------------------------------------------------------------------

    def _build_gatt(self) -> None:
        for service in layout(self.spec.layout):  # type: ignore[arg-type]
            chars = []
            for cs in service.chars:
                value = CharacteristicValue(
                    read=lambda _conn, v=cs.value: v, write=self._on_write_value
                )
                char = Characteristic(
                    f"{cs.uuid:04X}",
                    _properties(cs),
                    Characteristic.READABLE | Characteristic.WRITEABLE,
                    value,
                )
                if "notify" in cs.flags:
                    # Our own CCCD (bumble adds one only when none exists): it lets the
                    # board refuse the subscription the way a BMS that wants pairing does.
                    char.descriptors = [
                        Descriptor(
                            GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR,
                            Descriptor.READABLE | Descriptor.WRITEABLE,
                            CharacteristicValue(read=self._read_cccd, write=self._write_cccd),
                        )
                    ]
                    if cs.uuid == 0xFFE1:
                        self._notify_char = char
                chars.append(char)
            self.device.add_service(Service(f"{service.uuid:04X}", chars))

    def _read_cccd(self, _connection: Connection) -> bytes:
        return b"\x01\x00" if self.subscribed else b"\x00\x00"

    def _write_cccd(self, connection: Connection, value: bytes) -> None:
        self.cccd_writes += 1
        if self.faults.active("auth-required", self.spec.address):
            raise ATT_Error(ErrorCode.INSUFFICIENT_AUTHENTICATION)
        if self.pairing != "none" and not connection.is_encrypted:
            # Firmware >= 19.30: no subscription on a link that is not paired (encrypted).
            raise ATT_Error(ErrorCode.INSUFFICIENT_AUTHENTICATION)
        on = len(value) >= 1 and bool(value[0] & 0x01)
        if on and not self.subscribed:
            self.bms.subscribed()
        self.subscribed = on

    def _on_write_value(self, _connection: Connection, value: bytes) -> None:
        self.writes += 1
        self.bms.on_write(bytes(value))

    # ---- the radio --------------------------------------------------------------------------

    def _notify(self, chunk: bytes) -> None:
        if self.connection is not None and self.subscribed:
            self._outbox.put_nowait(chunk)
            if self._pump is None or self._pump.done():
                self._pump = asyncio.get_running_loop().create_task(self._send_all())

    async def _send_all(self) -> None:
        while not self._outbox.empty():
            chunk = self._outbox.get_nowait()
            connection, char = self.connection, self._notify_char
            if connection is None or char is None or not self.subscribed:
                continue
            try:
                await self.device.notify_subscriber(connection, char, chunk, force=True)
            except Exception as exc:
                log.info("%s: notify failed: %s", self.spec.address, exc)
                return

    async def _drop(self) -> None:
        connection = self.connection
        if connection is not None:
            await connection.disconnect(hci.HCI_REMOTE_USER_TERMINATED_CONNECTION_ERROR)

    def _on_connection(self, connection: Connection) -> None:
        self.connection = connection
        self.connections += 1
        connection.on("pairing", lambda _keys: self._paired())
        connection.on("disconnection", lambda _reason: self._on_disconnection(connection))

    def _paired(self) -> None:
        self.pairings += 1

    def _on_disconnection(self, connection: Connection) -> None:
        if self.connection is connection:
            self.connection = None
        self.subscribed = False
        self.bms.stop()
        self._outbox = asyncio.Queue()
        # A JK board advertises again as soon as its central lets go.
        asyncio.get_running_loop().create_task(self._sync_advertising())

    def _advertising_data(self) -> tuple[bytes, bytes]:
        """Name and the FFE0 service in the advert, the module's id in the scan response:
        what jk-ble-scan and the JK app look for."""
        adv = AdvertisingData(
            [
                (AdvertisingData.FLAGS, bytes([0x06])),
                (AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS, b"\xe0\xff"),
                (AdvertisingData.COMPLETE_LOCAL_NAME, self.spec.display_name.encode()),
            ]
        )
        mac = bytes.fromhex(self.spec.address.replace(":", ""))
        rsp = AdvertisingData([(AdvertisingData.MANUFACTURER_SPECIFIC_DATA, b"\x65\x0b" + mac)])
        return bytes(adv), bytes(rsp)

    def _wants_adverts(self) -> bool:
        return (
            self.advertising
            and self.connection is None
            and not self.faults.active("not-advertising", self.spec.address)
        )

    async def _sync_advertising(self) -> None:
        """Advertise exactly when the board should (on, nobody connected, no fault)."""
        async with self._advertising_lock:
            wanted = self._wants_adverts()
            if wanted and not self.device.is_advertising:
                adv, rsp = self._advertising_data()
                await self.device.start_advertising(
                    auto_restart=False,
                    advertising_data=adv,
                    scan_response_data=rsp,
                    # A JK module advertises every ~100 ms; bumble's 1 s default slows each
                    # connect.
                    advertising_interval_min=100,
                    advertising_interval_max=100,
                )
            elif not wanted and self.device.is_advertising and self.connection is None:
                await self.device.stop_advertising()

    # ---- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.device.power_on()
        self.advertising = True
        await self._sync_advertising()

    async def stop_advertising(self) -> None:
        self.faults.add(_fault("not-advertising", self.spec.address))
        await self._sync_advertising()

    async def resume_advertising(self) -> None:
        self.faults.clear("not-advertising", self.spec.address)
        await self._sync_advertising()

    async def vanish(self) -> None:
        """Powered off: the link drops (supervision timeout seen as a remote drop), no adverts."""
        self.advertising = False
        await self._sync_advertising()
        await self._drop()

    async def appear(self) -> None:
        self.advertising = True
        await self._sync_advertising()


class _FixedPasskey(PairingDelegate):
    def __init__(self, passkey: int) -> None:
        super().__init__(PairingDelegate.IoCapability.DISPLAY_OUTPUT_ONLY)
        self.passkey = passkey

    async def generate_passkey(self) -> int:
        return self.passkey


def _fault(name: str, address: str) -> Any:
    return make_fault(name, None, address)
