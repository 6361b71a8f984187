"""The sessions CSV: the owner UI's download and ``edge-station journal sessions --csv`` agree.

Both mask every token (short ones too) and defuse cells a spreadsheet would
run as a formula.
"""

from __future__ import annotations

import asyncio
import csv
import io
import subprocess
import sys
from pathlib import Path

from controller.core.bay import StopReason
from controller.ops.session_csv import COLUMNS, defuse, mask_token
from tests.test_api_rig import api_client, running_station, setup_owner

# Tokens as a camera or a CSMS might hand them over (the kiosk's form allows fewer).
TOKENS = ["AB", "1234", "=1+1", "-2+3", "+SUM(A1)", "@cmd", "04A1B2C3D4E5F6", "\tTAB", "\rCR"]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


async def _sessions(tmp: Path) -> tuple[str, Path]:
    """Run a session per token; return the API's CSV (the journal stays in ``tmp``)."""
    async with running_station(tmp) as rig:
        for tok in TOKENS:
            out = await rig.station.commands.present_token("bay1", tok, preauthorized="test")
            assert out.ok and out.session_id, out
            assert (await rig.station.commands.stop_session(out.session_id, StopReason.LOCAL)).ok
        client = await api_client(rig.station)
        await setup_owner(client)
        r = await client.get("/api/v1/sessions.csv")
        assert r.status_code == 200
        return r.text, tmp


def _parse(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def _check(rows: list[list[str]]) -> None:
    assert rows[0] == list(COLUMNS)
    assert len(rows) == len(TOKENS) + 1
    tok_col = COLUMNS.index("token")
    for row in rows[1:]:
        for cell in row:
            assert not cell.startswith(FORMULA_START), (cell, row)
        shown = row[tok_col]
        assert shown not in TOKENS and shown.lstrip("'") not in TOKENS, shown
    for tok in TOKENS:
        assert not any(cell in (tok, "'" + tok) for row in rows for cell in row), tok


async def test_api_and_cli_write_the_same_masked_defused_csv(tmp_path: Path) -> None:
    api_text, data_dir = await _sessions(tmp_path)
    api_rows = _parse(api_text)
    _check(api_rows)
    out_file = tmp_path / "out.csv"
    done = await asyncio.to_thread(export, data_dir, str(out_file))
    assert done.returncode == 0, done.stderr
    cli_rows = _parse(out_file.read_text(encoding="utf-8"))
    _check(cli_rows)
    assert sorted(cli_rows[1:]) == sorted(api_rows[1:])
    to_stdout = await asyncio.to_thread(export, data_dir, "-")
    assert _parse(to_stdout.stdout) == cli_rows


def export(data_dir: Path, target: str) -> subprocess.CompletedProcess[str]:
    """``edge-station journal --data-dir D sessions --csv TARGET`` in a fresh process."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "controller.cli.main",
            "journal",
            "--data-dir",
            str(data_dir),
            "sessions",
            "--csv",
            target,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_masking_hides_at_least_four_characters() -> None:
    assert mask_token("") == ""
    assert mask_token("A") == "…"
    assert mask_token("1234") == "…"
    assert mask_token("123456") == "…56"
    assert mask_token("12345678") == "…5678"
    assert mask_token("04A1B2C3D4E5F6") == "…E5F6"


def test_defusing() -> None:
    for bad in ("=1+1", "+1", "-1", "@x", "\tx", "\rx"):
        assert defuse(bad) == "'" + bad
    assert defuse("Local") == "Local" and defuse(-1.5) == -1.5 and defuse(None) is None
