"""Node firmware over the bus: the serial hub against the node simulator on a real pseudo-terminal
(transfer in CRC-checked chunks, hash check, A/B slots, boot-confirm, rollback)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from controller.ports import FirmwareUpdateFailed, NodeFirmware
from drivers.esp32.firmware_messages import MAX_CHUNK
from simulators.esp32_node import specs
from tests.test_esp32_serial import configs, running

pytestmark = pytest.mark.timeout(60)

OLD, NEW = "sim-esp32/1.0.0", "sim-esp32/2.0.0"
IMAGE = random.Random(19).randbytes(20_000)


async def test_an_update_is_transferred_booted_and_confirmed(tmp_path: Path) -> None:
    async with running(tmp_path, specs(1), configs(1)) as (bus, hub, _):
        assert isinstance(hub, NodeFirmware)
        hub.firmware_confirm_timeout_s = 1
        sim = bus.nodes["bay1"]
        boot_before = sim.boot_id
        seen: list[tuple[str, int, int]] = []
        await hub.update_firmware("bay1", IMAGE, NEW, lambda *p: seen.append(p))
        assert sim.fw.version == sim.firmware == NEW and sim.fw.installed == [NEW]
        assert bytes(sim.fw.slots[sim.fw.active].image) == IMAGE
        assert sim.fw.slots[1 - sim.fw.active].version == OLD  # the old image stays, in slot A
        assert sim.boot_id == boot_before + 1 and sim.fw.trial_until is None
        transfer = [d for s, d, _ in seen if s == "transfer"]
        assert transfer[0] == 0 and transfer[-1] == len(IMAGE) and transfer == sorted(transfer)
        assert len(transfer) == 1 + -(-len(IMAGE) // MAX_CHUNK)
        assert [s for s, _, _ in seen][-2:] == ["booting", "installed"]
        # The node works on its new firmware, and the hub knows which it runs.
        await hub.node("bay1").set_output(relay_on=True, current_a=10.0, lease_s=5.0)
        assert sim.physics.setpoint_a == 10.0
        assert hub.node("bay1").stats().firmware == NEW
        # Confirmed: the node keeps it past its trial time instead of rolling back.
        past_trial = bus.clock() + hub.firmware_confirm_timeout_s + 0.5
        await bus.wait_until(lambda: bus.clock() > past_trial)
        assert sim.fw.rollbacks == 0 and sim.firmware == NEW


async def test_an_image_corrupted_in_flash_is_refused_before_it_boots(tmp_path: Path) -> None:
    async with running(tmp_path, specs(1), configs(1)) as (bus, hub, _):
        sim = bus.nodes["bay1"]
        boot_before = sim.boot_id
        sim.fw.knobs.corrupt_flash = True
        with pytest.raises(FirmwareUpdateFailed) as info:
            await hub.update_firmware("bay1", IMAGE, NEW, lambda *p: None)
        assert info.value.stage == "refused" and "checksum" in str(info.value)
        assert sim.firmware == OLD and sim.boot_id == boot_before  # never rebooted
        # A second attempt, without the fault, goes through.
        await hub.update_firmware("bay1", IMAGE, NEW, lambda *p: None)
        assert sim.firmware == NEW


async def test_an_image_that_never_confirms_is_rolled_back(tmp_path: Path) -> None:
    async with running(tmp_path, specs(1), configs(1)) as (bus, hub, _):
        hub.firmware_confirm_timeout_s = 1
        hub.firmware_boot_timeout_s = 10.0
        sim = bus.nodes["bay1"]
        sim.fw.knobs.bad_image = True  # it hangs at boot: silent until the bootloader steps in
        with pytest.raises(FirmwareUpdateFailed) as info:
            await hub.update_firmware("bay1", IMAGE, NEW, lambda *p: None)
        assert info.value.stage == "rolled_back" and OLD in str(info.value)
        assert sim.firmware == OLD and sim.fw.rollbacks == 1 and sim.fw.installed == []
        await hub.node("bay1").set_output(relay_on=True, current_a=8.0, lease_s=5.0)
        assert sim.physics.setpoint_a == 8.0 and hub.node("bay1").stats().firmware == OLD


async def test_lost_and_garbled_frames_during_the_transfer_are_retried(tmp_path: Path) -> None:
    async with running(tmp_path, specs(1), configs(1)) as (bus, hub, _):
        sim = bus.nodes["bay1"]
        sim.set_knobs(drop_rate=0.05, corrupt_rate=0.05)
        await hub.update_firmware("bay1", IMAGE, NEW, lambda *p: None)
        assert bytes(sim.fw.slots[sim.fw.active].image) == IMAGE and sim.firmware == NEW
        assert hub.node("bay1").stats().retries > 0
