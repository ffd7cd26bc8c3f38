"""What adapters and devices share: the dispatcher, timing, faults, log, agents and background
tasks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from bluez_jk.sim.agents import AgentManager
from bluez_jk.sim.dispatch import Dispatcher
from bluez_jk.sim.eventlog import EventLog
from bluez_jk.sim.faults import FaultSet
from bluez_jk.sim.timing import Timing
from bluez_jk.sim.versions import BluezVersion

log = logging.getLogger(__name__)


class World:
    """Everything shared by adapters and devices."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        timing: Timing,
        faults: FaultSet,
        events: EventLog,
        bluez: BluezVersion = (5, 66),
    ) -> None:
        self.dispatcher = dispatcher
        self.bluez = bluez
        self.timing = timing
        self.faults = faults
        self.events = events
        self.tasks: set[asyncio.Task[None]] = set()
        self.agents = AgentManager(dispatcher, events)

    def spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(_logged(coro))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


async def _logged(coro: Awaitable[None]) -> None:
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception:  # a background step of the simulator must not die silently
        log.exception("sim: background task failed")
