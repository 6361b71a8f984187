"""External limits over Modbus TCP: a real pymodbus client against the station's own server."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from pymodbus.client import AsyncModbusTcpClient

from controller.core.station import Station
from controller.load.external import SITE, ExternalCaps
from drivers.setpoint import modbus as reg
from drivers.setpoint.extension import TRANSPORTS
from drivers.setpoint.modbus import ModbusSetpointServer
from tests.support.integ import audit_rows, running_station, until

EXTERNAL = {
    "lease_s": 5,
    "fallback_site_a": 6,
    "modbus": {"host": "127.0.0.1", "port": 0, "unit_id": 3},
}


def _in_force(st: Station) -> ExternalCaps:
    assert st.load is not None and st.load.external_now is not None
    return st.load.external_now


async def _client(server: ModbusSetpointServer) -> AsyncModbusTcpClient:
    await server.ready.wait()
    client = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=3)
    assert await client.connect()
    return client


async def test_a_site_limit_written_over_modbus_reaches_the_node_within_one_period(
    tmp_path: Path,
) -> None:
    async with running_station(tmp_path, external=EXTERNAL) as (st, hub):
        server = TRANSPORTS[st]["modbus"]
        client = await _client(server)
        try:
            node = hub.nodes["b1"]
            # Before the energy manager says anything, the site is on its fallback.
            await node.wait_output(lambda o: o[0] and o[1] == 6.0)
            rr = await client.read_holding_registers(0, count=11, device_id=3)
            assert not rr.isError()
            assert rr.registers[reg.REG_VERSION] == reg.MAP_VERSION
            assert rr.registers[reg.REG_FALLBACK] == 1
            assert rr.registers[reg.REG_BAYS] == 1

            w = await client.write_register(reg.REG_SITE_LIMIT_DA, 120, device_id=3)
            assert not w.isError()
            t0 = time.monotonic()
            # An increase is ramped after increase_delay_s (break before make): within 3 s.
            await node.wait_output(lambda o: o[0] and o[1] == 12.0, timeout=5)
            w = await client.write_register(reg.REG_SITE_LIMIT_DA, 80, device_id=3)
            t0 = time.monotonic()
            await node.wait_output(lambda o: o[0] and o[1] == 8.0, timeout=2)
            assert time.monotonic() - t0 < 1.0  # a decrease: within one load-loop period

            rr = await client.read_holding_registers(0, count=11, device_id=3)
            assert rr.registers[reg.REG_SITE_LIMIT_DA] == 80
            assert rr.registers[reg.REG_FALLBACK] == 0
            assert 0 < rr.registers[reg.REG_LEASE_LEFT_S] <= 5
            assert rr.registers[reg.REG_SITE_CURRENT_DA] >= 80  # the building's 2 A + 8 A
            bay = await client.read_holding_registers(reg.BAY_BASE, count=7, device_id=3)
            assert bay.registers[reg.BAY_STATUS] == reg.STATUS_CODES["Charging"]
            assert bay.registers[reg.BAY_SETPOINT_DA] == 80

            # The heartbeat renews the lease: no lapse while it keeps coming.
            for i in range(4):
                await client.write_register(reg.REG_HEARTBEAT, i, device_id=3)
                await node.wait_output(lambda o: o[1] == 8.0)
                await asyncio.sleep(2.0)  # the energy manager's own pace
            assert node.outputs[-1][1] == 8.0
            assert st.snapshots.station()["external"]["fallback"] is False

            # Silence: the lease runs out and the fallback holds, within the lease's time.
            t0 = time.monotonic()
            await node.wait_output(lambda o: o[1] == 6.0, timeout=8)
            assert time.monotonic() - t0 < 5.0 + 1.5
            rr = await client.read_holding_registers(0, count=11, device_id=3)
            assert rr.registers[reg.REG_FALLBACK] == 1
            await until(st, lambda: SITE in _in_force(st).fallback)  # audited by then
            snap = st.snapshots.station()["external"]
            assert snap["fallback"] is True
            assert "energy manager" in " ".join(snap["messages"])
            rows = await audit_rows(st, "external")
        finally:
            client.close()
        kinds = [r["kind"] for r in rows]
        assert "lapsed" in kinds and kinds.count("applied") == 2
        lapsed = json.loads(next(r for r in rows if r["kind"] == "lapsed")["detail"])
        assert lapsed["old_a"] == 8.0 and lapsed["new_a"] == 6.0


async def test_bad_writes_are_refused_with_a_modbus_exception_and_audited(tmp_path: Path) -> None:
    async with running_station(tmp_path, external=EXTERNAL) as (st, hub):
        client = await _client(TRANSPORTS[st]["modbus"])
        try:
            await client.write_register(reg.REG_SITE_LIMIT_DA, 100, device_id=3)
            await hub.nodes["b1"].wait_output(lambda o: o[1] == 10.0)
            too_big = await client.write_register(reg.REG_SITE_LIMIT_DA, 65000, device_id=3)
            assert too_big.isError() and too_big.exception_code == 3  # ILLEGAL_VALUE
            read_only = await client.write_register(reg.REG_FALLBACK, 0, device_id=3)
            assert read_only.isError() and read_only.exception_code == 2  # ILLEGAL_ADDRESS
            bad_switch = await client.write_register(reg.REG_GRID_OPERATOR, 7, device_id=3)
            assert bad_switch.isError()
            no_bay = await client.write_register(reg.BAY_BASE + reg.BAY_STRIDE, 60, device_id=3)
            assert no_bay.isError()
            # A block write that reaches a read-only register changes nothing, not even its start.
            block = await client.write_registers(
                reg.REG_SITE_LIMIT_DA, [70, 0, 0, 0, 1], device_id=3
            )
            assert block.isError() and block.exception_code == 2
            rr = await client.read_holding_registers(0, count=11, device_id=3)
            assert rr.registers[reg.REG_SITE_LIMIT_DA] == 100  # nothing changed
            refused = [r for r in await audit_rows(st, "external") if r["kind"] == "refused"]
        finally:
            client.close()
        assert hub.nodes["b1"].outputs[-1][1] == 10.0
        assert len(refused) == 1 and "plausible" in refused[0]["detail"]


async def test_a_bay_limit_and_the_grid_operator_over_modbus(tmp_path: Path) -> None:
    external = {**EXTERNAL, "fallback_site_a": 30}  # both bays start at once
    async with running_station(tmp_path, n=2, external=external) as (st, hub):
        client = await _client(TRANSPORTS[st]["modbus"])
        try:
            await client.write_register(reg.REG_SITE_LIMIT_DA, 160, device_id=3)
            # The external limit caps what the chargers draw: 16 A per phase, 8 A each.
            await hub.nodes["b2"].wait_output(lambda o: o[1] == 8.0, timeout=5)
            b2 = reg.BAY_BASE + reg.BAY_STRIDE
            await client.write_register(b2 + reg.BAY_LIMIT_DA, 60, device_id=3)
            await hub.nodes["b2"].wait_output(lambda o: o[1] == 6.0, timeout=5)
            bay = await client.read_holding_registers(b2, count=7, device_id=3)
            assert bay.registers[reg.BAY_LIMIT_DA] == 60
            await client.write_register(reg.REG_GRID_OPERATOR, 1, device_id=3)
            # 4.2 kW over three phases: 6.0 A per phase for the whole site -> one bay at 6 A.
            await hub.nodes["b1"].wait_output(lambda o: o[1] + hub.nodes["b2"].setpoint_a <= 6.0)
            await until(st, lambda: _in_force(st).grid_operator)
            snap = st.snapshots.station()["external"]
            assert snap["grid_operator"] is True
            assert "Limited by grid operator" in " ".join(snap["messages"])
            rr = await client.read_holding_registers(0, count=11, device_id=3)
            assert rr.registers[reg.REG_GRID_OPERATOR] == 1
            kinds = [r["kind"] for r in await audit_rows(st, "external")]
        finally:
            client.close()
        assert "grid_operator_on" in kinds
