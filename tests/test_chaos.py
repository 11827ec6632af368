"""The short chaos suite (``make chaos`` runs the long one): the demo on six windows while
layers are SIGKILLed, PostgreSQL and Valkey are killed -9; every row must match the clean
run, with nothing dead-lettered."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tests.chaos import suite, table

pytestmark = pytest.mark.embedded


@pytest.mark.timeout(400)
async def test_the_demo_survives_killed_layers_and_servers(tmp_path: Path) -> None:
    progress = io.StringIO()
    outcomes = await suite(short=True, data_dir=tmp_path / "data", seed=12, out=progress)
    report = table(outcomes)
    clean, *faulty = outcomes
    assert clean.code == 0 and clean.summary["windows_completed"] == 18, report
    for outcome in faulty:
        assert outcome.faults >= 3, report
        assert outcome.code == 0 and outcome.equal, report
        varying = ("seconds", "process_restarts", "windows_resent")
        assert ({k: v for k, v in outcome.summary.items() if k not in varying}
                == {k: v for k, v in clean.summary.items() if k not in varying}), report
        assert outcome.summary["records_dead_lettered"] == 0, report
        assert outcome.recover_s and max(outcome.recover_s) < 30, report
