"""Config folders: decoded once, cross-checked, errors naming the file and the JSON path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from assay.contracts.config import ConfigError, config_json_schema, load_config
from assay.processors.plan import build_plan
from tests.conftest import ITEM_TABLE, write_config

ROOT = Path(__file__).resolve().parents[1]


def broken(tmp_path: Path, **changes: object) -> Path:
    folder = write_config(tmp_path / "config", "s")
    tables = json.loads((folder / "tables.json").read_text())
    tables["tables"]["item"].update(changes)
    (folder / "tables.json").write_text(json.dumps(tables))
    return folder


def problems(folder: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        build_plan(load_config(folder))
    return info.value.problems


def test_a_good_config_loads(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "c", "s"))
    assert list(config.tables) == ["item"] and list(config.divisions) == ["east", "west"]


def test_unknown_key_is_refused_with_file_and_path(tmp_path: Path) -> None:
    [problem] = problems(broken(tmp_path, keyy=["id"]))
    assert "tables.json" in problem and "$.tables.item" in problem and "keyy" in problem


def test_unknown_key_column_names_the_path(tmp_path: Path) -> None:
    [problem] = problems(broken(tmp_path, key=["idd"]))
    assert problem.endswith("$.tables.item.key[0]: 'idd' is not a column of the table")


def test_division_naming_an_undefined_table(tmp_path: Path) -> None:
    folder = write_config(tmp_path / "config", "s")
    data = json.loads((folder / "pipeline.json").read_text())
    data["divisions"]["east"]["tables"].append("orders")
    (folder / "pipeline.json").write_text(json.dumps(data))
    [problem] = problems(folder)
    assert "pipeline.json: $.divisions.east.tables[1]: table 'orders' is not defined" in problem


def test_table_defined_in_two_files(tmp_path: Path) -> None:
    folder = write_config(tmp_path / "config", "s")
    (folder / "more.json").write_text(json.dumps({"tables": {"item": ITEM_TABLE}}))
    [problem] = problems(folder)
    assert "tables.json" in problem and "more.json" in problem


def test_formula_on_a_missing_field(tmp_path: Path) -> None:
    formula = {"op": "upper", "arg": {"field": "nmae", "type": "text"}}
    [problem] = problems(broken(tmp_path, formulas={"shout": formula}))
    assert "tables.json" in problem and "$.tables.item.formulas" in problem
    assert "nmae" in problem and "shout" in problem


def test_ambiguous_ton_is_refused(tmp_path: Path) -> None:
    formula = {"op": "convert", "arg": {"field": "weight", "type": "number"},
               "from": "ton", "to": "kilogram"}
    [problem] = problems(broken(tmp_path, formulas={"kg": formula}))
    assert "ton" in problem and "short_ton" in problem


def test_not_json(tmp_path: Path) -> None:
    folder = write_config(tmp_path / "config", "s")
    (folder / "tables.json").write_text("{")
    [problem] = problems(folder)
    assert "tables.json: not valid JSON" in problem


def test_assay_check_exits_non_zero_naming_the_problem(tmp_path: Path) -> None:
    folder = broken(tmp_path, key=["idd"])
    result = subprocess.run([sys.executable, "-m", "assay", "check", str(folder)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "$.tables.item.key[0]" in result.stderr


def test_assay_check_accepts_the_shipped_config() -> None:
    result = subprocess.run([sys.executable, "-m", "assay", "check", str(ROOT / "config")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_published_json_schema_is_current() -> None:
    published = json.loads((ROOT / "schema" / "assay-config.schema.json").read_text())
    assert published == json.loads(msgspec.json.encode(config_json_schema()))


def test_gold_linkage_kpi_names_and_work_mem_are_checked(tmp_path: Path) -> None:
    folder = tmp_path / "config"
    folder.mkdir()
    for source in (ROOT / "config").glob("*.json"):
        (folder / source.name).write_text(source.read_text())
    data = json.loads((folder / "gold.json").read_text())
    gold = data["gold"]
    gold["linkage"]["targets"]["account"] = "account_number"
    gold["tables"]["customer"]["columns"]["crm_account_id"] = "CustomerID"
    kpi = gold["kpis"]["shipped_vs_goal"]
    kpi["dimensions"]["qty"] = kpi["dimensions"].pop("category")
    kpi["goals"]["match"]["qty"] = kpi["goals"]["match"].pop("category")
    gold["work_mem"] = "lots"
    (folder / "gold.json").write_text(json.dumps(data))
    found = problems(folder)
    assert [p.split(": $.gold.", 1)[1].split(":")[0] for p in found] == [
        "linkage.targets.account", "linkage.link_column", "kpis.shipped_vs_goal.dimensions.qty",
        "work_mem"], found
