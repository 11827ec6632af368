"""How the demo turns the Procfile and ``-c NAME=N`` into supervised consumer slots."""

from __future__ import annotations

from pathlib import Path

import pytest

from assay.demo.run import (
    DemoOptions,
    ProcfileError,
    default_concurrency,
    layer_slots,
    parse_concurrency,
)

PROCFILE = """bronze: assay run bronze
silver: assay run silver
barrier: assay run barrier
web: assay serve
"""


def options(tmp_path: Path, concurrency: dict[str, int] | None,
            procfile: str = PROCFILE) -> DemoOptions:
    (tmp_path / "Procfile").write_text(procfile)
    return DemoOptions(config_dir=tmp_path, data_dir=tmp_path, procfile=tmp_path / "Procfile",
                       log_dir=tmp_path / "logs", concurrency=concurrency)


def names(opts: DemoOptions) -> list[str]:
    return [slot.name for slot in layer_slots(opts, "redis://x", "postgresql://x")]


def test_silver_gets_a_consumer_per_core_up_to_four() -> None:
    assert [default_concurrency(n)["silver"] for n in (1, 2, 3, 8)] == [1, 2, 3, 4]


def test_counts_are_parsed_as_honcho_takes_them() -> None:
    assert parse_concurrency(["silver=2", "bronze=3, gold=1"]) == {
        "silver": 2, "bronze": 3, "gold": 1}


def test_a_count_becomes_numbered_slots_and_consumer_names(tmp_path: Path) -> None:
    assert names(options(tmp_path, {"silver": 3, "bronze": 1})) == [
        "bronze", "silver.1", "silver.2", "silver.3", "barrier"]


def test_without_counts_silver_follows_the_cores(tmp_path: Path) -> None:
    silver = default_concurrency()["silver"]
    expected = ["silver"] if silver == 1 else [f"silver.{i}" for i in range(1, silver + 1)]
    assert names(options(tmp_path, None)) == ["bronze", *expected, "barrier"]


def test_the_default_leaves_a_procfile_without_silver_alone(tmp_path: Path) -> None:
    assert names(options(tmp_path, None, "bronze: assay run bronze\n")) == ["bronze"]


@pytest.mark.parametrize(("counts", "says"), [
    ({"web": 2}, "has no layer process named 'web'"),
    ({"gold": 2}, "has no layer process named 'gold'"),
])
def test_a_count_for_a_name_the_procfile_does_not_run_is_refused(
        tmp_path: Path, counts: dict[str, int], says: str) -> None:
    with pytest.raises(ProcfileError, match=says):
        names(options(tmp_path, counts))


def test_a_count_for_a_line_that_names_its_consumer_is_refused(tmp_path: Path) -> None:
    opts = options(tmp_path, {"silver": 2}, "silver: assay run silver --name s\n")
    with pytest.raises(ProcfileError, match="sets --name"):
        names(opts)
