"""The recovery policy table of docs/design.md, decision by decision."""

from __future__ import annotations

from bluez_jk.bluez.errors import (
    AcquireRefused,
    BusLost,
    ConnectAborted,
    LinkLost,
    ObjectVanished,
    StaleCache,
)
from bluez_jk.bluez.recovery import Limits, Tried, decide
from bluez_jk.errors import (
    AuthenticationRequired,
    BusError,
    DeviceNotFound,
    InProgress,
    NotifyAcquired,
    ProtocolError,
    ServicesNotResolved,
    Timeout,
)

PLENTY = 60.0


def test_in_progress_waits_with_growing_backoff_while_time_is_left() -> None:
    tried = Tried()
    delays = [decide(InProgress(), tried, PLENTY).delay_s for _ in range(6)]
    assert delays == sorted(delays)
    assert delays[0] > 0
    assert all(decide(InProgress(), tried, PLENTY).action == "retry" for _ in range(3))
    assert decide(InProgress(), tried, 0.1).action == "give_up"


def test_connect_abort_retries_then_gives_up_after_n_in_a_row() -> None:
    tried = Tried()
    limits = Limits(connect_failures=3)
    actions = [decide(ConnectAborted(), tried, PLENTY, limits).action for _ in range(3)]
    assert actions == ["retry", "retry", "give_up"]


def test_services_missing_resets_the_cache_once() -> None:
    tried = Tried()
    assert decide(ServicesNotResolved(), tried, PLENTY).action == "reset_cache"
    assert decide(StaleCache(), tried, PLENTY).action == "give_up"


def test_notify_acquired_resets_the_link_once() -> None:
    tried = Tried()
    assert decide(NotifyAcquired(), tried, PLENTY).action == "reset_link"
    assert decide(NotifyAcquired(), tried, PLENTY).action == "give_up"


def test_link_drop_reconnects_while_time_is_left() -> None:
    tried = Tried()
    assert decide(LinkLost(), tried, PLENTY).action == "retry"
    assert decide(LinkLost(), tried, 0.01).action == "give_up"


def test_vanished_object_is_rediscovered_a_bounded_number_of_times() -> None:
    tried = Tried()
    limits = Limits(rediscoveries=1)
    assert decide(ObjectVanished(), tried, PLENTY, limits).action == "rediscover"
    assert decide(ObjectVanished(), tried, PLENTY, limits).action == "give_up"


def test_bus_loss_reconnects_the_bus_a_bounded_number_of_times() -> None:
    tried = Tried()
    limits = Limits(bus_reconnects=2)
    actions = [decide(BusLost(), tried, PLENTY, limits).action for _ in range(3)]
    assert actions == ["reconnect_bus", "reconnect_bus", "give_up"]
    assert BusLost().type == "BusError"


def test_other_bus_errors_are_final() -> None:
    assert decide(BusError("GetManagedObjects: no org.bluez"), Tried(), PLENTY).action == (
        "give_up"
    )


def test_acquire_refused_falls_back_to_start_notify() -> None:
    assert decide(AcquireRefused(), Tried(), PLENTY).action == "start_notify"


def test_final_errors_are_not_retried() -> None:
    for err in (DeviceNotFound(), AuthenticationRequired(), Timeout(), ProtocolError()):
        assert decide(err, Tried(), PLENTY).action == "give_up"
