"""One connection to the system bus (dbus-fast, unix fds negotiated) and the few primitives the
rest of `bluez/` builds on: a bounded method call that returns typed errors, GetManagedObjects,
and signal subscriptions whose match rules are always removed again."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from dbus_fast import BusType, Message, MessageType, unpack_variants
from dbus_fast.aio import MessageBus

from bluez_jk.bluez.errors import BusLost, map_dbus_error
from bluez_jk.bluez.paths import BLUEZ
from bluez_jk.bluez.properties import ManagedObjects
from bluez_jk.errors import BusError, JkError, Stage, Timeout

log = logging.getLogger(__name__)

DBUS = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"
PROPERTIES = "org.freedesktop.DBus.Properties"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"

SignalHandler = Callable[[Message], None]

# The BlueZ methods whose reply carries fds (GattCharacteristic1's socket hand-overs).
FD_METHODS = frozenset({"AcquireNotify", "AcquireWrite"})

# Match rules kept for the life of a connection (`signals(..., keep=True)`): one per device
# watched and two per adapter, so a gateway's set stays far below this; past it, rules are
# added and removed per use again, so the set can never grow without bound.
MAX_KEPT_RULES = 64


def properties_changed_rule(*, path: str | None = None, namespace: str | None = None) -> str:
    rule = f"type='signal',sender='{BLUEZ}',interface='{PROPERTIES}',member='PropertiesChanged'"
    if path is not None:
        rule += f",path='{path}'"
    if namespace is not None:
        rule += f",path_namespace='{namespace}'"
    return rule


def interfaces_rule(member: str, under: str) -> str:
    # No path='/' filter: BlueZ emits from '/', a dbus-fast service from the object path
    # (docs/bluez.md 7, "signals").
    return (
        f"type='signal',sender='{BLUEZ}',interface='{OBJECT_MANAGER}',member='{member}',"
        f"arg0path='{under.rstrip('/')}/'"
    )


class BluezBus:
    """A dbus-fast MessageBus plus typed calls. Owns the connection it was given."""

    def __init__(self, bus: MessageBus) -> None:
        self._bus = bus
        # The unique name bluetoothd answered the last call from: a different owner later
        # means bluetoothd exited (crashed, restarted) in between.
        self.bluez_owner: str | None = None
        # Rules added once and left in place until the connection closes: an AddMatch and a
        # RemoveMatch round trip per read saved, at the price of signals nobody listens to
        # between reads (a disconnected BMS emits next to none).
        self._kept: set[str] = set()
        # Signal handlers of the open `signals` blocks, called by one dbus-fast handler that
        # stays registered: dbus-fast inspects a handler's signature on every registration.
        self._handlers: list[SignalHandler] = []
        bus.add_message_handler(self._dispatch)

    @classmethod
    async def connect(cls, *, timeout_s: float = 5.0) -> BluezBus:
        """A new connection to the system bus (or DBUS_SYSTEM_BUS_ADDRESS).

        Raises:
            BusLost: no answer within `timeout_s`, or the connection or its authentication
                failed.
        """
        # BusType.SYSTEM honours DBUS_SYSTEM_BUS_ADDRESS; fds must be negotiated or the
        # AcquireNotify reply is never delivered (docs/bluez.md fact 14).
        address = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or "the system bus"
        bus = MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True)
        try:
            async with asyncio.timeout(timeout_s):
                await bus.connect()
        except TimeoutError as err:
            bus.disconnect()
            raise BusLost(f"no answer from {address}", stage="bus") from err
        except Exception as err:  # any transport/auth failure is "bus unreachable"
            raise BusLost(f"cannot connect to {address}: {err}", stage="bus") from err
        log.debug("bus connected unique_name=%s", bus.unique_name)
        return cls(bus)

    @property
    def connected(self) -> bool:
        return bool(self._bus.connected)

    @property
    def unique_name(self) -> str:
        return str(self._bus.unique_name)

    def _dispatch(self, message: Message) -> None:
        if message.message_type == MessageType.SIGNAL:
            for handler in tuple(self._handlers):
                handler(message)

    @property
    def kept_rules(self) -> frozenset[str]:
        """The match rules this connection keeps until it closes (at most MAX_KEPT_RULES)."""
        return frozenset(self._kept)

    async def close(self) -> None:
        """Disconnect and wait (at most 2 s) until dbus-fast has let go of the socket.

        Raises:
            Nothing: a close that fails or hangs is logged.
        """
        # Waited for even when the bus already dropped (dbus-daemon restarted): the cause
        # (EOFError) sits in dbus-fast's disconnect future, and a future whose exception is
        # never retrieved logs "Future exception was never retrieved" with a traceback.
        if self._bus.connected:
            self._bus.disconnect()
        try:
            async with asyncio.timeout(2.0):
                await self._bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
        except TimeoutError:
            log.warning("bus did not close within 2 s")
        except Exception as err:  # noqa: BLE001 - wait_for_disconnect re-raises the cause
            log.debug("bus close reason=%r", err)

    async def call(
        self,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: Sequence[Any] = (),
        *,
        stage: Stage,
        timeout_s: float,
        destination: str = BLUEZ,
    ) -> Message:
        """One method call; an error reply becomes a typed JkError, never a raw DBusError.

        dbus-fast's call() has no timeout and cancelling it cancels nothing in bluetoothd
        (docs/bluez.md fact 4), so callers choose a bound fitting the method.

        Raises:
            BusLost: the connection is closed, broke under the call, or gave no reply.
            Timeout: no reply within `timeout_s`.
            JkError: an error reply, as the subclass `map_dbus_error` picks for it (the first
                matching rule of bluez/errors.py RULES, else the stage's default).
        """
        if not self._bus.connected:
            raise BusLost("the bus connection is closed", stage=stage)
        message = Message(
            destination=destination,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=list(body),
        )
        try:
            if member in FD_METHODS:
                reply = await self._fd_call(message, timeout_s)
            else:
                # A late reply to a call given up on carries nothing to close: dbus-fast drops
                # it. Awaited directly, without the task and shield below (a read makes about
                # ten calls; they were a tenth of its CPU).
                async with asyncio.timeout(timeout_s):
                    reply = await self._bus.call(message)
        except TimeoutError as err:
            raise Timeout(f"{member} got no reply within {timeout_s:.1f} s", stage=stage) from err
        except Exception as err:  # the connection broke under the call
            raise BusLost(f"{member}: bus connection lost ({err!r})", stage=stage) from err
        if reply is None:
            raise BusLost(f"{member}: no reply", stage=stage)
        if destination == BLUEZ and reply.sender and reply.sender.startswith(":"):
            self.bluez_owner = reply.sender
        if reply.message_type == MessageType.ERROR:
            for fd in reply.unix_fds:
                os.close(fd)
            text = str(reply.body[0]) if reply.body else ""
            raise map_dbus_error(
                reply.error_name or "", text, member=member, path=path, stage=stage
            )
        return reply

    async def _fd_call(self, message: Message, timeout_s: float) -> Message | None:
        """A call whose reply may carry fds. The request is on its way whatever happens to the
        caller, so the reply is awaited through a shield: when the caller gives up (timeout,
        cancellation by a pause or a session deadline) a late reply is still taken in and its
        fds closed. Otherwise dbus-fast drops it with its fds open, and an AcquireNotify fd
        dropped that way keeps the notify session "acquired" in BlueZ until the link goes.
        (dbus-fast's callback form, `_call`, would save the task, but it is private.)"""
        pending = asyncio.ensure_future(self._bus.call(message))
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(pending)
        except BaseException:
            pending.add_done_callback(_close_late_reply)
            raise

    async def managed_objects(
        self,
        *,
        stage: Stage,
        timeout_s: float = 10.0,
        wanted: Callable[[str], bool] | None = None,
    ) -> ManagedObjects:
        """ObjectManager.GetManagedObjects of org.bluez, unpacked; only the paths `wanted`
        accepts when given (unpacking every device in range costs more than the call).

        Raises:
            BusLost, Timeout: as `call`.
            BusError: bluetoothd is not on the bus (ServiceUnknown, NameHasNoOwner) or the
                policy refuses us (AccessDenied).
            JkError: any other error reply, as `call` maps it.
        """
        reply = await self.call(
            "/", OBJECT_MANAGER, "GetManagedObjects", stage=stage, timeout_s=timeout_s
        )
        if wanted is None:
            objects: ManagedObjects = unpack_variants(reply.body[0])
            return objects
        return {
            path: unpack_variants(ifaces) for path, ifaces in reply.body[0].items() if wanted(path)
        }

    async def name_owner(self, name: str = BLUEZ, *, timeout_s: float = 2.0) -> str | None:
        """The unique name that owns `name` now; None when nobody does (bluetoothd is down).

        Raises:
            BusLost, Timeout: as `call`.
        """
        try:
            reply = await self.call(
                DBUS_PATH,
                DBUS,
                "GetNameOwner",
                "s",
                [name],
                stage="bus",
                timeout_s=timeout_s,
                destination=DBUS,
            )
        except JkError as err:
            if err.dbus_error == "org.freedesktop.DBus.Error.NameHasNoOwner":
                return None
            raise
        return str(reply.body[0])

    async def get_property(
        self, path: str, interface: str, name: str, *, stage: Stage, timeout_s: float = 5.0
    ) -> Any:
        """One property, unpacked.

        Raises:
            ObjectVanished: the object is gone (AdapterNotFound for an adapter path).
            BusLost, Timeout, JkError: as `call`.
        """
        reply = await self.call(
            path, PROPERTIES, "Get", "ss", [interface, name], stage=stage, timeout_s=timeout_s
        )
        return unpack_variants(reply.body[0])

    def add_handler(self, handler: Callable[[Message], Message | None]) -> None:
        """Serve method calls to an object we export (a reply Message, or None: not ours)."""
        self._bus.add_message_handler(handler)

    def remove_handler(self, handler: Callable[[Message], Message | None]) -> None:
        self._bus.remove_message_handler(handler)

    async def _bus_method(self, member: str, rule: str) -> None:
        await self.call(
            DBUS_PATH, DBUS, member, "s", [rule], stage="bus", timeout_s=5.0, destination=DBUS
        )

    @asynccontextmanager
    async def signals(
        self, rules: Sequence[str], handler: SignalHandler, *, keep: bool = False
    ) -> AsyncIterator[None]:
        """Deliver signals matching `rules` to `handler` inside the block. Without `keep` the
        match rules are removed on every exit path (leaked rules live as long as the
        connection); with `keep` they stay for the connection's life, one AddMatch per rule
        and connection, within MAX_KEPT_RULES (beyond it they are removed as without).

        Raises:
            BusLost, Timeout: as `call`, for an AddMatch.
            BusError: dbus-daemon refused a rule (its `dbus_error` says why).
        """
        added: list[str] = []
        self._handlers.append(handler)
        try:
            for rule in rules:
                if keep and rule in self._kept:
                    continue
                kept = keep and len(self._kept) < MAX_KEPT_RULES
                # Counted before the reply: an AddMatch whose caller was cancelled or timed out
                # still reaches dbus-daemon, and a RemoveMatch sent after it on the same
                # connection is handled after it, so it removes the rule either way.
                (self._kept.add if kept else added.append)(rule)
                try:
                    await self._bus_method("AddMatch", rule)
                except JkError as err:
                    if err.dbus_error is not None:  # refused: there is no rule to remove
                        (self._kept.discard if kept else added.remove)(rule)
                    raise
            yield
        finally:
            self._handlers.remove(handler)
            if added:
                # Shielded: a second cancellation during the cleanup must not skip a rule.
                removal = asyncio.ensure_future(self._remove_matches(added))
                try:
                    await asyncio.shield(removal)
                except asyncio.CancelledError:
                    await asyncio.wait([removal])
                    raise

    async def _remove_matches(self, rules: Sequence[str]) -> None:
        for rule in rules:
            if not self._bus.connected:
                return
            try:
                await self._bus_method("RemoveMatch", rule)
            except (BusError, Timeout) as err:
                log.warning("RemoveMatch failed rule=%s error=%s", rule, err)


def _close_late_reply(pending: asyncio.Future[Message]) -> None:
    """Done-callback for a call its caller gave up on: close the fds a late reply carries."""
    if pending.cancelled() or pending.exception() is not None:
        return  # the connection closed first; nothing arrived
    reply = pending.result()
    for fd in reply.unix_fds:
        os.close(fd)
    log.debug("closed %d fd(s) of a late %s reply", len(reply.unix_fds), reply.message_type.name)


def signal_body(message: Message, interface: str, member: str) -> list[Any] | None:
    """The unpacked body of a signal of that kind, or None for any other message."""
    if (
        message.message_type != MessageType.SIGNAL
        or message.interface != interface
        or message.member != member
    ):
        return None
    body: list[Any] = unpack_variants(message.body)
    return body
