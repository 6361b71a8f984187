"""A node's output lease is renewed as late as is safe, and one failed renewal never lets it lapse.

A renewal is an acknowledged command on the node's bus. Knowing how long a command may take
at worst (the hub's ack timeout times its attempts), the station renews after
``renew_after_s``: one renewal failing after its whole budget and one more attempt a sixth of
the lease later still fit inside the lease. Checked on the real serial driver and the node
simulator behind a pseudo-terminal: how often the node is renewed, and that it never falls
to its safe share while a whole renewal is lost on the wire.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.core.auth import free_vend_step
from controller.core.config import parse_config
from controller.core.journal import Journal
from controller.core.runner import RENEW_MARGIN_S, renew_after_s
from controller.core.station import Station
from controller.ports import NodeEventKind
from drivers.esp32.assemble import build_serial
from drivers.esp32.serial_hub import HubTiming
from simulators.esp32_node.bus import SimNodeSpec, SimulatedBus

LEASE_S = 5.0
BUDGET_S = HubTiming().ack_timeout_s * (1 + HubTiming().retries)  # the serial bus's default
RENEW_S = renew_after_s(LEASE_S, BUDGET_S, failed=False)


def test_renewal_timing() -> None:
    assert RENEW_S == pytest.approx(LEASE_S - 2 * BUDGET_S - LEASE_S / 6 - RENEW_MARGIN_S)
    assert RENEW_S > LEASE_S / 3 + 0.5  # later than before the budget was known
    assert renew_after_s(LEASE_S, None, failed=False) == LEASE_S / 3
    assert renew_after_s(LEASE_S, 4.0, failed=False) == LEASE_S / 3  # a slow link: no later
    assert renew_after_s(LEASE_S, BUDGET_S, failed=True) == LEASE_S / 6


@given(lease=st.floats(0.5, 60.0), budget=st.floats(0.0, 30.0))
def test_one_failed_renewal_and_a_retry_fit_in_the_lease(lease: float, budget: float) -> None:
    after = renew_after_s(lease, budget, failed=False)
    assert after >= lease / 3
    if after > lease / 3:  # later than the old rule: only where the worst case still fits
        worst = after + budget + renew_after_s(lease, budget, failed=True) + budget
        assert worst <= lease - RENEW_MARGIN_S + 1e-9


async def test_renewed_late_and_never_lapsing_when_a_renewal_is_lost(tmp_path: Path) -> None:
    async with SimulatedBus(tmp_path / "sim", [SimNodeSpec("bay1", 1, "evse", 16.0, 0.0)]) as bus:
        node = bus.nodes["bay1"]
        node.plug_in(bus.clock(), max_a=16.0, phases=3)
        cfg = parse_config(
            {
                "station": {"id": "renew", "data_dir": str(tmp_path)},
                "timers": {"lease_s": LEASE_S},
                "buses": [{"id": "bays", "port": bus.port_path, "host_timeout_s": 30}],
                "bays": [{"id": "bay1", "connector": 1, "bus": "bays", "address": 1}],
            }
        )
        journal = await Journal.open(tmp_path / "j.sqlite3")
        station = Station(cfg, journal, hubs={"bays": build_serial(cfg.buses[0], cfg.bays)})
        station.authorizer.add(free_vend_step())
        await station.restore()
        task = asyncio.create_task(station.run())
        try:
            await bus.wait_until(lambda: node.configured, 10)
            async with station.events.subscription(lossy=True) as q, asyncio.timeout(10):
                while not station.bays["bay1"].state.node_online:
                    await q.get()
            assert (await station.commands.present_token("bay1", "CARD")).ok
            await bus.wait_until(lambda: node.physics.setpoint_a == 16.0, 10)

            # Steady charging: renewals come RENEW_S apart (the old rule: LEASE_S / 3).
            start, t0 = node.counters.outputs_applied, bus.clock()
            await bus.wait_until(
                lambda: node.counters.outputs_applied >= start + 3, 3 * RENEW_S + 5
            )
            per_renewal = (bus.clock() - t0) / 3
            assert per_renewal > LEASE_S / 3 + 0.3, per_renewal

            # A whole renewal lost on the wire (its first attempt and every retry): the station
            # tries again a sixth of the lease later, inside the lease.
            link = station.bays["bay1"].node
            assert link is not None
            timeouts = link.stats().timeouts
            dropped, applied = node.counters.dropped, node.counters.outputs_applied
            node.knobs.drop_commands_next = 1 + HubTiming().retries
            await bus.wait_until(lambda: node.counters.dropped == dropped + 4, RENEW_S + 5)
            await bus.wait_until(lambda: node.counters.outputs_applied > applied, LEASE_S)
            assert link.stats().timeouts == timeouts + 1  # the renewal did fail, as a whole
            expired = [e for e in node.counters.events if e.kind is NodeEventKind.LEASE_EXPIRED]
            assert expired == [] and node.physics.setpoint_a == 16.0
            assert node.lease_remaining(bus.clock()) > LEASE_S - 1.0
        finally:
            station.request_stop("test")
            await asyncio.wait_for(task, 10)
            await journal.close()
