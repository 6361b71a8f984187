"""Site leases, pure: the wire format, the station's lease (expiry, replays, fallback), the
coordinator's fair share with break before make, the allocation's composition with the OCPP
station cap, and the coordinator's check (``edge-station coordinator --check``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as hs

from controller.cli.main import main
from controller.load import AllocationInput, BayInput, GridInput, LoadConfig, Reason, allocate
from controller.load.coordinate import (
    CoordinatorConfig,
    SiteCoordinator,
    check_site_shares,
    fair_share,
)
from controller.load.lease import Lease, LeaseError, Report, StationLease
from controller.load.topology import Topology
from controller.ports import Freshness

G = (6.0, 6.0, 6.0)


def lease(phases: float, *, seq: int, epoch: int = 1, ttl: float = 2.0) -> Lease:
    return Lease("st-a", (phases,) * 3, ttl, epoch, seq, expires=1e9)


# --------------------------------------------------------------------------- wire


def test_a_lease_and_a_report_go_over_the_wire_and_back() -> None:
    lz = lease(18.0, seq=3)
    assert Lease.decode(lz.encode()) == lz
    rep = Report("st-a", (32.0, 32.0, 0.0), (9.5, 9.5, 0.0), (20.0, 21.0, 3.0), (7, 3))
    assert Report.decode(rep.encode()) == rep


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"station":"st-a","phases_a":[1,2],"ttl_s":2,"epoch":1,"seq":1,"expires":0}',
        b'{"station":"st-a","phases_a":[1,2,-3],"ttl_s":2,"epoch":1,"seq":1,"expires":0}',
        b'{"station":"st-a","phases_a":[1,2,3],"ttl_s":0,"epoch":1,"seq":1,"expires":0}',
        b'{"station":"st-a","phases_a":[1,2,"x"],"ttl_s":2,"epoch":1,"seq":1,"expires":0}',
        b'{"station":"","phases_a":[1,2,3],"ttl_s":2,"epoch":1,"seq":1,"expires":0}',
    ],
)
def test_a_garbled_lease_is_refused_with_a_reason(raw: bytes) -> None:
    with pytest.raises(LeaseError):
        Lease.decode(raw)


# --------------------------------------------------------------------------- the station's side


def test_before_any_lease_the_station_is_on_its_guaranteed_share() -> None:
    sl = StationLease("st-a", G)
    state = sl.evaluate(0.0)
    assert (state.cap_a, state.leased, state.applied) == (G, False, None)


def test_a_lease_holds_for_its_time_from_receipt_then_lapses_to_the_guaranteed_share() -> None:
    sl = StationLease("st-a", G)
    assert sl.offer(100.0, lease(18.0, seq=1)).kind == "applied"
    assert sl.evaluate(101.9).cap_a == (18.0,) * 3
    state = sl.evaluate(102.0)
    assert (state.cap_a, state.leased) == (G, False)
    assert [c.kind for c in state.changes] == ["lapsed"]


def test_the_coordinator_s_wall_clock_is_never_compared_with_the_station_s() -> None:
    sl = StationLease("st-a", G)
    # Stamped by a coordinator whose clock is a day behind, or a day ahead: both hold ttl_s.
    for seq, skew in ((1, -86400.0), (2, 86400.0)):
        lz = Lease("st-a", (18.0,) * 3, 2.0, 1, seq, expires=1.8e9 + skew)
        assert sl.offer(10.0 * seq, lz).kind in ("applied", "renewed")
        assert sl.evaluate(10.0 * seq + 1.9).leased
        assert not sl.evaluate(10.0 * seq + 2.0).leased


def test_the_fallback_is_never_above_the_last_lease() -> None:
    sl = StationLease("st-a", G)
    sl.offer(0.0, lease(4.0, seq=1))
    assert sl.evaluate(5.0).cap_a == (4.0,) * 3


def test_a_replayed_lease_renews_nothing() -> None:
    sl = StationLease("st-a", G)
    sl.offer(0.0, lease(18.0, seq=5))
    # The broker's retained copy of the same lease, delivered again after a reconnect.
    assert sl.offer(1.5, lease(18.0, seq=5), remaining_s=2.0, stored=True).kind == "stale"
    assert sl.offer(1.5, lease(18.0, seq=4)).kind == "stale"
    assert sl.evaluate(2.0).leased is False


def test_a_stored_lease_counts_only_for_what_the_broker_says_is_left() -> None:
    sl = StationLease("st-a", G)
    # Waited in the broker: 2 s left by the broker's clock, minus 1 s for its rounding.
    assert sl.offer(0.0, lease(18.0, seq=1, ttl=10.0), remaining_s=2.0, stored=True).kind == (
        "applied"
    )
    assert sl.evaluate(0.9).leased and not sl.evaluate(1.0).leased
    # A stored lease whose age the broker does not tell is no lease.
    assert sl.offer(2.0, lease(18.0, seq=2), stored=True).kind == "stale"


def test_a_lease_is_never_trusted_longer_than_the_station_allows() -> None:
    sl = StationLease("st-a", G, max_lease_s=5.0)
    sl.offer(0.0, lease(18.0, seq=1, ttl=3600.0))
    assert sl.next_expiry() == 5.0


def test_a_lease_for_another_station_is_refused() -> None:
    sl = StationLease("st-b", G)
    assert sl.offer(0.0, lease(18.0, seq=1)).kind == "refused"
    assert sl.evaluate(0.0).cap_a == G


def test_a_restarted_coordinator_s_new_epoch_is_taken() -> None:
    sl = StationLease("st-a", G)
    sl.offer(0.0, lease(18.0, seq=50, epoch=1))
    assert sl.offer(0.5, lease(12.0, seq=1, epoch=2)).kind == "applied"
    assert sl.evaluate(0.6).applied == (2, 1)


# --------------------------------------------------------------------------- fair share


def test_fair_share_floors_first_then_even_up_to_each_cap() -> None:
    assert fair_share(36.0, [6.0, 6.0], [32.0, 32.0]) == [18.0, 18.0]
    assert fair_share(36.0, [6.0, 6.0], [10.0, 32.0]) == [10.0, 26.0]
    assert fair_share(20.0, [6.0, 6.0], [6.0, 6.0]) == [6.0, 6.0]  # no demand: no more
    assert fair_share(9.0, [6.0, 6.0], [32.0, 32.0]) == [4.5, 4.5]  # guarantee broken


@given(
    hs.floats(0, 200),
    hs.lists(hs.tuples(hs.floats(0, 20), hs.floats(0, 40)), min_size=1, max_size=6),
)
def test_fair_share_never_hands_out_more_than_available_or_a_cap(
    available: float, stations: list[tuple[float, float]]
) -> None:
    floors = [f for f, _ in stations]
    caps = [max(f, c) for f, c in stations]
    got = fair_share(available, floors, caps)
    assert sum(got) <= available + 1e-6
    assert all(g <= c + 1e-9 for g, c in zip(got, caps, strict=True))
    if sum(floors) <= available:
        assert all(g >= f - 0.1 for g, f in zip(got, floors, strict=True))


# --------------------------------------------------------------------------- the coordinator


def coordinator_config(**kw: object) -> CoordinatorConfig:
    data: dict[str, object] = {
        "site": "yard",
        "main_limit_a": 40,
        "main_guaranteed_headroom_a": 12,
        "site_meter": "st-a",
        "lease_s": 2,
        "period_s": 0.5,
        "transit_margin_s": 0.5,
        "stations": [
            {"id": "st-a", "max_a": 32, "guaranteed_a": 6},
            {"id": "st-b", "max_a": 32, "guaranteed_a": 6},
        ],
    }
    data.update(kw)
    return CoordinatorConfig.model_validate(data)


def report(
    sid: str, measured: float, *, grid: float | None = None, applied: int | None = None
) -> Report:
    return Report(
        sid,
        (32.0,) * 3,
        (measured,) * 3,
        (grid,) * 3 if grid is not None else None,
        (1, applied) if applied is not None else None,
    )


def test_without_a_site_meter_only_the_guaranteed_headroom_is_shared() -> None:
    c = SiteCoordinator(coordinator_config(), epoch=1, started=0.0)
    c.report(10.0, report("st-a", 0.0))
    c.report(10.0, report("st-b", 0.0))
    rnd = c.compute(10.0, 0.0)
    assert rnd.site_meter_fresh is False
    assert {s: lz.phases_a[0] for s, lz in rnd.leases.items()} == {"st-a": 6.0, "st-b": 6.0}


def test_a_cut_goes_out_at_once_but_the_room_it_frees_waits_for_the_station_to_follow() -> None:
    c = SiteCoordinator(coordinator_config(), epoch=1, started=0.0)
    # Settled: 4 A of building load, 18 A each.
    c.report(10.0, report("st-a", 18.0, grid=40.0, applied=None))
    c.report(10.0, report("st-b", 18.0, applied=None))
    first = c.compute(10.0, 0.0)
    assert first.leases["st-a"].phases_a[0] == 18.0
    seq_a, seq_b = first.leases["st-a"].seq, first.leases["st-b"].seq
    # st-b's cars leave half its demand: its target drops; st-a wants more.
    c.report(11.0, report("st-a", 18.0, grid=40.0, applied=seq_a))
    c.report(11.0, Report("st-b", (10.0,) * 3, (18.0,) * 3, None, (1, seq_b)))  # still drawing 18 A
    rnd = c.compute(11.0, 0.0)
    assert rnd.targets_a["st-a"][0] == 26.0 and rnd.leases["st-b"].phases_a[0] == 10.0
    assert rnd.leases["st-a"].phases_a[0] == 18.0  # st-b has not followed yet
    # st-b confirms its new lease and draws 10 A: now st-a may rise.
    c.report(12.0, Report("st-b", (10.0,) * 3, (10.0,) * 3, None, (1, rnd.leases["st-b"].seq)))
    c.report(12.0, report("st-a", 18.0, grid=32.0, applied=rnd.leases["st-a"].seq))
    assert c.compute(12.0, 0.0).leases["st-a"].phases_a[0] == 26.0


def test_a_silent_station_keeps_its_guaranteed_share_reserved() -> None:
    c = SiteCoordinator(coordinator_config(), epoch=1, started=0.0)
    c.report(10.0, report("st-a", 6.0, grid=10.0))
    rnd = c.compute(10.0, 0.0)
    assert rnd.leases["st-b"].phases_a[0] == 6.0
    assert rnd.leases["st-a"].phases_a[0] == 30.0  # 40 − 4 of building load − st-b's 6


def test_just_started_a_coordinator_raises_no_lease_of_a_station_it_has_not_heard() -> None:
    c = SiteCoordinator(coordinator_config(), epoch=2, started=10.0)
    c.report(10.1, report("st-a", 6.0, grid=10.0))
    # st-b may still hold a lease of the previous run (up to its maximum): nothing to hand out.
    assert c.compute(10.1, 0.0).leases["st-a"].phases_a[0] == 6.0


def test_a_report_of_an_unknown_station_is_refused() -> None:
    c = SiteCoordinator(coordinator_config(), epoch=1, started=0.0)
    assert c.report(1.0, report("st-x", 0.0)) is False
    assert c.refused == 1


# --------------------------------------------------------------------------- the allocation


def test_the_lower_of_the_lease_and_the_ocpp_station_cap_binds() -> None:
    cfg = LoadConfig.model_validate(
        {
            "site": {"main_limit_a": 63},
            "bays": [{"id": "b1", "max_current_a": 32}],
        }
    )
    topo = Topology.from_config(cfg)
    bays = (BayInput("b1", active=True),)
    grid = GridInput((0.0, 0.0, 0.0), Freshness.FRESH, None)

    def run(cap: float | None, lz: tuple[float, float, float] | None) -> tuple[float, Reason]:
        a = allocate(AllocationInput(topo, bays, grid, station_cap_a=cap, lease_a=lz))
        return a.setpoints_a["b1"], a.limits["b1"][0]

    assert run(None, (18.0, 20.0, 20.0)) == (18.0, Reason.SITE_LEASE)
    assert run(10.0, (18.0, 18.0, 18.0)) == (10.0, Reason.STATION_CAP)
    assert run(24.0, (18.0, 18.0, 18.0)) == (18.0, Reason.SITE_LEASE)
    assert run(None, None) == (32.0, Reason.BAY_MAX)


# --------------------------------------------------------------------------- the check


def test_the_proof_passes_when_the_guaranteed_shares_fit() -> None:
    assert check_site_shares(coordinator_config()) == []


def test_the_proof_fails_in_a_sentence_per_phase() -> None:
    cfg = coordinator_config(main_guaranteed_headroom_a=[12, 12, 10])
    assert check_site_shares(cfg) == [
        "On L3 the stations' guaranteed shares add up to 12 A (st-a 6 A, st-b 6 A), more than "
        "the 10 A the site guarantees free without a meter: lower a station's guaranteed "
        "share or raise the site's guaranteed headroom."
    ]


COORDINATOR = """
[coordinator]
site = "yard"
main_limit_a = 40
main_guaranteed_headroom_a = {head}
site_meter = "st-a"

[[coordinator.stations]]
id = "st-a"
max_a = 32
guaranteed_a = 6
{config_line}

[[coordinator.stations]]
id = "st-b"
max_a = 32
guaranteed_a = 6

[mqtt]
username = "coordinator"
password = "k-secret"
"""

STATION = """
[station]
id = "st-a"
data_dir = "data"
[[buses]]
id = "bus"
[[bays]]
id = "b1"
connector = 1
bus = "bus"
address = 1
max_current_a = 16
safe_current_a = 6
[site]
main_limit_a = 32
main_guaranteed_headroom_a = {own}
[mqtt]
password = "c-secret"
[site_lease]
site = "yard"
"""


def run_check(tmp: Path, *, head: float, own: float | None = None) -> int:
    line = ""
    if own is not None:
        (tmp / "st-a.toml").write_text(STATION.format(own=own), encoding="utf-8")
        line = 'config = "st-a.toml"'
    path = tmp / "coordinator.toml"
    path.write_text(COORDINATOR.format(head=head, config_line=line), encoding="utf-8")
    return main(["coordinator", "--config", str(path), "--check"])


def test_check_passes_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_check(tmp_path, head=12, own=6) == 0
    assert "OK (2 stations share site yard)" in capsys.readouterr().out


def test_check_fails_with_sentences(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_check(tmp_path, head=10, own=8) == 2
    err = capsys.readouterr().err
    assert (
        "On L1 the stations' guaranteed shares add up to 12 A (st-a 6 A, st-b 6 A), more than "
        "the 10 A the site guarantees free without a meter" in err
    )
    assert (
        "On L1 station st-a falls back to 8 A (its guaranteed headroom) but the site "
        "guarantees it only 6 A: lower the station's guaranteed headroom or raise its share "
        "here." in err
    )
