import asyncio
from pathlib import Path
from tests.test_ocpp_support import rig, CP

async def test_x(tmp_path: Path) -> None:
    async def dump():
        await asyncio.sleep(12)
        for t in asyncio.all_tasks():
            print("TASK", t.get_name(), t.get_coro())
            t.print_stack(limit=4)
    d = asyncio.create_task(dump())
    async with rig(tmp_path, bays=3) as r:
        await r.online()
        print("online")
        await r.sim.wait_for(lambda: {0, 1, 2, 3} <= set(r.sim.statuses.get(CP, {})), timeout=5)
        print("statuses", r.sim.statuses)
    print("done")
    d.cancel()
