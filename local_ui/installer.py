"""Installer tests on an idle bay: lock/unlock, relay on/off and a current ramp.

Outputs go through :meth:`Station.installer_test_output`, which holds a test
output on an idle bay (refused while a session runs, the bay is faulted or
offline, or the station is in safe mode; clipped to the bay's maximum, still
guarded by the node's lease) and audits it; the station ends a test at once
when a safe-mode cause, a fault or the emergency stop appears. The lock test
drives the node's lock directly. Each step records what the node reported
back in its telemetry. A ramp (minimum → maximum in steps, each held a few
seconds) runs as a job of the station's task runner (in its TaskGroup); its
progress is read with ``GET /api/v1/diagnostics/tests/{id}``. ``relay_off``
ends any test, also in safe mode, and also stops a running ramp. Every test
that switched an output ends with a clean-up (the station ends the test
output, the node confirms the relay is off) whose outcome is part of the
result: a clean-up that fails makes the test fail, with the reason.

A ramp step passes only when the current the bay measures follows the one
commanded (within :data:`RAMP_TOL_A` or :data:`RAMP_TOL_FRAC`, whichever is
larger) before :data:`SETTLE_S` runs out: a node that confirms the setpoint but
measures no current (no vehicle or test load, a broken current sensor, a relay
that does not close) fails the ramp with a sentence saying what was measured.
A step that fails ends the ramp; it never goes on to a higher current.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import structlog

from controller.core.bays import BayRuntime
from controller.core.events import Subscription, TestEnded
from controller.core.station import Station
from controller.ports import DriverError

log = structlog.get_logger(__name__)

CONFIRM_S = 3.0
"""How long a step waits for the node's telemetry to confirm it."""
KEEP_RUNS = 20
RAMP_TOL_A = 1.0
"""A ramp step's measured current may differ from the commanded one by this much (A) ..."""
RAMP_TOL_FRAC = 0.1
"""... or by this share of the commanded current, whichever is larger."""
SETTLE_S = 5.0
"""How long a ramp step waits for the measured current (IEC 61851: an EV follows within 5 s)."""


def ramp_tolerance_a(commanded_a: float) -> float:
    return max(RAMP_TOL_A, RAMP_TOL_FRAC * commanded_a)


def follows(measured_a: float, commanded_a: float) -> bool:
    """Whether a measured current follows the commanded one within the ramp's tolerance."""
    return abs(measured_a - commanded_a) <= ramp_tolerance_a(commanded_a)


def ramp_verdict(measured_a: float | None, commanded_a: float) -> str:
    """Why a ramp step failed, as a sentence ("" when the measured current follows)."""
    if measured_a is None:
        return (
            f"At {commanded_a:g} A commanded the node reported no current measurement,"
            " so the ramp cannot show that current flows."
        )
    if follows(measured_a, commanded_a):
        return ""
    if measured_a < 0.5:
        return (
            f"At {commanded_a:g} A commanded the bay measured {measured_a:.1f} A: no current"
            " flowed. Connect a vehicle or a test load, check the relay and the current"
            " sensor, and run the ramp again."
        )
    if measured_a > commanded_a:
        return (
            f"At {commanded_a:g} A commanded the bay measured {measured_a:.1f} A, more than"
            " it was allowed: check the node's current control before charging."
        )
    return (
        f"At {commanded_a:g} A commanded the bay measured only {measured_a:.1f} A (allowed"
        f" {ramp_tolerance_a(commanded_a):.1f} A less): the current does not follow the setpoint."
    )


@dataclass
class TestRun:
    __test__ = False  # not a pytest class

    id: str
    bay_id: str
    action: str
    actor: str
    started_at: float
    plan: list[float] = field(default_factory=list)
    state: str = "running"  # running | passed | failed | aborted | stopped
    message: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)
    finished_at: float | None = None
    cleanup: dict[str, Any] | None = None  # how the test output was ended, once it was
    stopping: str = ""  # why the test is being stopped from outside
    task: asyncio.Task[None] | None = None

    def finish(self, state: str, message: str, wall: float) -> None:
        if self.state == "running":
            self.state, self.message, self.finished_at = state, message, wall

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "bay_id": self.bay_id,
            "action": self.action,
            "actor": self.actor,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "state": self.state,
            "message": self.message,
            "plan_a": self.plan,
            "steps": list(self.steps),
            "cleanup": self.cleanup,
        }


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _telemetry(rt: BayRuntime) -> dict[str, Any] | None:
    tel = rt.telemetry
    if tel is None:
        return None
    return {
        "relay_on": tel.relay_on,
        "setpoint_a": tel.setpoint_a,
        "current_a": list(tel.current_a),
        "locked": tel.locked,
        "door_closed": tel.door_closed,
    }


async def _confirm(rt: BayRuntime, since: float, ok: Any, timeout: float = CONFIRM_S) -> bool:
    """Wait for a telemetry frame newer than ``since`` (monotonic) for which ``ok(tel)`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tel = rt.telemetry
        if tel is not None and tel.at >= since and ok(tel):
            return True
        await asyncio.sleep(0.05)  # telemetry lands on the runtime without an event to await
    return False


class InstallerTests:
    def __init__(self) -> None:
        self.runs: dict[str, TestRun] = {}

    def get(self, run_id: str) -> TestRun | None:
        return self.runs.get(run_id)

    def recent(self) -> list[TestRun]:
        return sorted(self.runs.values(), key=lambda r: r.started_at, reverse=True)

    def running_on(self, bay_id: str) -> TestRun | None:
        for r in self.runs.values():
            if r.bay_id == bay_id and r.state == "running":
                return r
        return None

    def _new(self, st: Station, bay_id: str, action: str, actor: str) -> TestRun:
        run = TestRun(uuid.uuid4().hex[:12], bay_id, action, actor, st.clock.wall())
        self.runs[run.id] = run
        for old in self.recent()[KEEP_RUNS:]:
            if old.state != "running":
                self.runs.pop(old.id, None)
        return run

    @staticmethod
    def _precheck(st: Station, rt: BayRuntime) -> None:
        if rt.node is None or not rt.state.node_online:
            raise Refused(409, "node_offline", "The bay's node is not connected.")
        if rt.state.session is not None:
            raise Refused(409, "bay_in_use", "Stop the running session first.")
        if st.safety.active:
            raise Refused(
                409, "safe_mode", "The station is in safe mode: tests wait until it is cleared."
            )
        if rt.state.fault is not None:
            raise Refused(409, "bay_faulted", "This bay is out of order: clear its fault first.")

    async def start(
        self,
        st: Station,
        bay_id: str,
        action: str,
        *,
        actor: str,
        current_a: float | None = None,
        hold_s: float | None = None,
        step_a: float | None = None,
    ) -> TestRun:
        """Run (lock, relay) or start (ramp) a test; raises :class:`Refused`."""
        rt = st.bays[bay_id]
        if action in ("lock", "unlock") and rt.cfg.kind != "locker":
            raise Refused(409, "not_supported", "This bay has no lock.")
        busy = self.running_on(bay_id)
        if busy is not None:
            if action != "relay_off":
                raise Refused(409, "test_running", "A test is running on this bay.")
            await self.stop(busy, st)
        if action == "relay_off":
            # Ending a test is always allowed (in safe mode too); with nothing to end,
            # a running session is not the installer's to switch.
            if busy is None and rt.test_output is None and rt.state.session is not None:
                raise Refused(409, "bay_in_use", "Stop the running session first.")
            run = self._new(st, bay_id, action, actor)
            await self._end(st, rt, run, confirm=True, hold=hold_s or 3.0)
            done = run.cleanup or {}
            ok = bool(done.get("ok"))
            tel = done.get("telemetry")
            run.steps.append(
                {
                    "step": "relay off",
                    "relay_on": False,
                    "commanded_a": 0.0,
                    "reported_a": tel["setpoint_a"] if tel else None,
                    "measured_a": max(tel["current_a"]) if tel else None,
                    "ack_ms": done.get("ack_ms"),
                    "ok": ok,
                    "telemetry": tel,
                }
            )
            run.finish(
                "passed" if ok else "failed",
                "" if ok else _cleanup_problem(run),
                st.clock.wall(),
            )
            return run
        self._precheck(st, rt)
        run = self._new(st, bay_id, action, actor)
        if action == "ramp":
            step = step_a or 2.0
            top = min(current_a or rt.cfg.max_current_a, rt.cfg.max_current_a)
            amps = rt.cfg.min_current_a
            while amps < top - 1e-9:
                run.plan.append(round(amps, 1))
                amps += step
            run.plan.append(round(max(top, rt.cfg.min_current_a), 1))
            task = st.tasks.spawn(
                self._ramp(st, rt, run, hold_s or 3.0), name=f"installer-ramp:{bay_id}", wait=False
            )
            if task is None:
                self.runs.pop(run.id, None)
                raise Refused(503, "station_stopped", "The station is not running.")
            run.task = task
            return run
        try:
            if action in ("lock", "unlock"):
                await self._lock(st, rt, run, action == "lock")
            else:
                amps = current_a if current_a is not None else rt.cfg.min_current_a
                # A relay test output ends by itself when its hold runs out.
                await self._output(st, rt, run, True, amps, hold_s or 5.0)
            ok = all(s["ok"] for s in run.steps)
            msg = "" if ok else "The node did not confirm."
            run.finish("passed" if ok else "failed", msg, st.clock.wall())
        except _Abort as err:
            run.finish("aborted", str(err), st.clock.wall())
        except DriverError as err:
            run.finish("failed", f"The node did not confirm: {err}", st.clock.wall())
        return run

    async def stop(self, run: TestRun, st: Station) -> None:
        run.stopping = "Stopped by relay off."
        if run.task is not None and not run.task.done():
            run.task.cancel()
            await asyncio.wait([run.task])  # our own cancellation still propagates
        run.finish("stopped", run.stopping, st.clock.wall())

    async def _output(
        self, st: Station, rt: BayRuntime, run: TestRun, relay: bool, amps: float, hold: float
    ) -> float:
        t0 = time.monotonic()
        out = await st.commands.installer_test_output(
            rt.cfg.id, relay_on=relay, current_a=amps, hold_s=hold, actor=run.actor
        )
        if not out.ok:
            raise _Abort(out.message)
        sent = float(out.data.get("current_a", amps))
        ok = await _confirm(
            rt,
            t0,
            lambda tel: tel.relay_on == relay and (not relay or abs(tel.setpoint_a - sent) < 0.5),
        )
        tel = _telemetry(rt)
        run.steps.append(
            {
                "step": f"{sent:g} A" if relay else "relay off",
                "relay_on": relay,
                "commanded_a": sent,
                "reported_a": tel["setpoint_a"] if tel else None,
                "measured_a": max(tel["current_a"]) if tel else None,
                "ack_ms": round((time.monotonic() - t0) * 1000, 1),
                "ok": ok,
                "telemetry": tel,
            }
        )
        return time.monotonic() - t0

    async def _end(
        self, st: Station, rt: BayRuntime, run: TestRun, *, confirm: bool, hold: float = CONFIRM_S
    ) -> None:
        """End the test output and record how that went in ``run.cleanup`` (never raises)."""
        t0 = time.monotonic()
        try:
            out = await st.commands.end_test_output(rt.cfg.id, actor=run.actor)
        except Exception as err:  # the clean-up reports; it never hides a failure
            log.exception("installer.cleanup_failed", bay_id=rt.cfg.id, run_id=run.id)
            run.cleanup = {
                "ok": False,
                "code": "error",
                "message": f"Ending the test failed: {err}",
            }
            return
        if not out.ok:
            log.error("installer.cleanup_refused", bay_id=rt.cfg.id, code=out.code)
            run.cleanup = {"ok": False, "code": out.code, "message": out.message}
            return
        if not confirm:
            # Cancelled (relay off, or the station stops): the station already switches
            # the bay back; waiting for the node would only delay the stop.
            run.cleanup = {"ok": True, "code": out.code, "message": "Test output ended."}
            return
        off = await _confirm(rt, t0, lambda tel: not tel.relay_on, timeout=max(hold, CONFIRM_S))
        tel = _telemetry(rt)
        run.cleanup = {
            "ok": off,
            "code": out.code if off else "not_confirmed",
            "message": "Test output ended."
            if off
            else "The node did not confirm that the relay is off.",
            "ack_ms": round((time.monotonic() - t0) * 1000, 1),
            "telemetry": tel,
        }
        if not off:
            log.error("installer.relay_not_confirmed_off", bay_id=rt.cfg.id, run_id=run.id)

    async def _lock(self, st: Station, rt: BayRuntime, run: TestRun, locked: bool) -> None:
        node = rt.node
        assert node is not None
        t0 = time.monotonic()
        try:
            await node.set_lock(locked=locked)
        finally:
            await st.audit.record(
                "installer_test", run.actor, {"bay_id": rt.cfg.id, "action": run.action}
            )
        ok = await _confirm(rt, t0, lambda tel: tel.locked is None or tel.locked == locked)
        run.steps.append(
            {
                "step": run.action,
                "ack_ms": round((time.monotonic() - t0) * 1000, 1),
                "ok": ok,
                "telemetry": _telemetry(rt),
            }
        )

    @staticmethod
    async def _measure(rt: BayRuntime, events: Subscription, step: dict[str, Any]) -> str:
        """Settle and judge a ramp step's measured current; the failure as a sentence, or ""."""
        commanded = float(step["commanded_a"])
        measured = await _measure_until(rt, events, commanded)
        verdict = ramp_verdict(measured, commanded)
        step["measured_a"] = None if measured is None else round(measured, 2)
        step["tolerance_a"] = round(ramp_tolerance_a(commanded), 2)
        step["follows"] = not verdict
        step["ok"] = bool(step["ok"]) and not verdict
        step["message"] = verdict
        return verdict

    async def _ramp(self, st: Station, rt: BayRuntime, run: TestRun, hold: float) -> None:
        state, message = "failed", ""
        try:
            ends = st.events.subscription(lossy=False, kinds=(TestEnded,))
            async with ends as events:
                message = ""
                for amps in run.plan:
                    # Each step's hold outlasts the step and its settling, so the relay stays
                    # on between steps.
                    t0 = time.monotonic()
                    await self._output(st, rt, run, True, amps, hold + SETTLE_S + CONFIRM_S + 1.0)
                    step = run.steps[-1]
                    _raise_if_ended(events, rt.cfg.id)  # the station's reason comes first
                    if not step["ok"]:
                        message = "The node did not confirm the setpoint."
                        break
                    message = await self._measure(rt, events, step)
                    if message:
                        break
                    took = time.monotonic() - t0
                    ended = await _ended_within(events, rt.cfg.id, max(0.0, hold - took))
                    if ended is not None:
                        raise _Abort(ended)
            state = "failed" if message else "passed"
        except _Abort as err:
            state, message = "aborted", str(err)
        except DriverError as err:
            state, message = "failed", f"The node did not confirm: {err}"
        except asyncio.CancelledError:
            state, message = "stopped", run.stopping or "The station stopped, so the test ended."
            raise
        except Exception:
            log.exception("installer.ramp_failed", bay_id=rt.cfg.id)
            state, message = "failed", "The test failed on an internal error (see the log)."
        finally:
            # End the test: the bay goes back to what it wants (relay off while idle).
            # Cancelled, the station switches the bay back by itself: no waiting for the node.
            cancelled = (task := asyncio.current_task()) is not None and task.cancelling() > 0
            await self._end(st, rt, run, confirm=not cancelled)
            if run.cleanup is not None and not run.cleanup["ok"]:
                state, message = "failed", _cleanup_problem(run, message)
            run.finish(state, message, st.clock.wall())


def _raise_if_ended(events: Subscription, bay_id: str) -> None:
    """Raise :class:`_Abort` with the station's message if it has ended the bay's test output."""
    while not events.empty():
        ev = events.get_nowait()
        if isinstance(ev, TestEnded) and ev.bay_id == bay_id:
            raise _Abort(ev.message or "The station ended the test output.")


async def _measure_until(rt: BayRuntime, events: Subscription, commanded_a: float) -> float | None:
    """Wait (up to :data:`SETTLE_S`) for a measured current that follows ``commanded_a``.

    Returns the last measured current (None: the node measures none); raises
    :class:`_Abort` when the station ends the test output meanwhile.
    """
    since = time.monotonic()  # only frames measured after the setpoint was confirmed count
    deadline = since + SETTLE_S
    measured: float | None = None
    while True:
        _raise_if_ended(events, rt.cfg.id)
        tel = rt.telemetry
        if tel is not None and tel.at >= since and tel.current_a:
            measured = max(tel.current_a)
        if measured is not None and measured > commanded_a + ramp_tolerance_a(commanded_a):
            return measured  # more than commanded: no waiting for it to settle
        if measured is not None and follows(measured, commanded_a):
            return measured
        if time.monotonic() >= deadline:
            return measured
        await asyncio.sleep(0.05)  # telemetry lands on the runtime without an event to await


async def _ended_within(events: Subscription, bay_id: str, seconds: float) -> str | None:
    """Wait ``seconds``; the station's message if it ends the bay's test output meanwhile."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                ev = await events.get()
                if isinstance(ev, TestEnded) and ev.bay_id == bay_id:
                    return ev.message or "The station ended the test output."
    return None


def _cleanup_problem(run: TestRun, before: str = "") -> str:
    what = (run.cleanup or {}).get("message") or "The test output could not be ended."
    return f"{before} {what}".strip() if before else str(what)


class _Abort(Exception):
    pass
