"""The installable product: a wheel built from a fresh clone, installed into a fresh venv,
runs the demo from an empty folder with the same KPIs as the checkout.

The fresh venv reuses the already-installed dependencies through a ``.pth`` line (its own
site-packages first, so ``assay`` is the wheel's): nothing is downloaded. The container recipe
(``Containerfile``) runs the same build and install commands.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.once

ROOT = Path(__file__).resolve().parents[1]
RANGE = ["--first", "2013-01", "--last", "2013-03"]


def run(command: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True,
                            check=False, timeout=300, **kwargs)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sdist and wheel from ``python -m build`` in a fresh clone of HEAD; the clone is gone."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    base = tmp_path_factory.mktemp("build")
    clone = base / "clone"
    run(["git", "clone", "--quiet", "--no-hardlinks", ROOT, clone])
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", base / "dist", clone])
    shutil.rmtree(clone)
    return base / "dist"


def wheel_of(dist: Path) -> Path:
    (wheel,) = dist.glob("assay-*-py3-none-any.whl")
    return wheel


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed (no deps downloaded: they come via a .pth)."""
    home = tmp_path_factory.mktemp("venv") / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", home])
    purelib = Path(run([home / "bin" / "python", "-c",
                        "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
                       ).stdout.strip())
    (purelib / "_assay_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "--python", home / "bin" / "python", "install",
         "--quiet", "--no-deps", "--no-index", "--disable-pip-version-check", wheel_of(dist)])
    return home


def test_build_makes_an_sdist_and_a_wheel(dist: Path) -> None:
    assert [p.name for p in sorted(dist.iterdir())] == [
        wheel_of(dist).name, wheel_of(dist).name.replace("-py3-none-any.whl", ".tar.gz")]


def test_the_wheel_holds_only_the_assay_package_and_its_run_time_data(dist: Path) -> None:
    with zipfile.ZipFile(wheel_of(dist)) as wheel:
        names = wheel.namelist()
        (record,) = [n for n in names if n.endswith(".dist-info/RECORD")]
        recorded = [line.split(",")[0] for line in wheel.read(record).decode().splitlines()]
        top_level = wheel.read(record.replace("RECORD", "top_level.txt")).decode().split()
    assert sorted(recorded) == sorted(names)
    stray = [n for n in recorded
             if not n.startswith("assay/") and not n.startswith(record.split("/")[0] + "/")]
    assert stray == []
    assert top_level == ["assay"]
    for needed in ("assay/resources/adventureworks/SalesOrderDetail.csv.gz",
                   "assay/resources/adventureworks/LICENSE",
                   "assay/resources/adventureworks/PROVENANCE.md",
                   "assay/resources/config/pipeline.json", "assay/resources/Procfile",
                   "assay/resources/schema/assay-config.schema.json",
                   "assay/contracts/config.py", "assay/streams/consumer.py"):
        assert needed in recorded


def test_the_installed_record_adds_only_the_console_script(venv: Path) -> None:
    purelib = Path(run([venv / "bin" / "python", "-c",
                        "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
                       ).stdout.strip())
    (record,) = purelib.glob("assay-*.dist-info/RECORD")
    for line in record.read_text().splitlines():
        path = (purelib / line.split(",")[0]).resolve()
        assert (path.is_relative_to(purelib / "assay")
                or path.is_relative_to(record.parent)
                or path == (venv / "bin" / "assay").resolve()), line


def demo_kpis(command: list[str | Path], cwd: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    result = run([*command, "demo", "--json", *RANGE], cwd=cwd, env=env)
    # A quiet run: each log event at most once, and nothing routine (info, debug).
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert len({e["event"] for e in events}) == len(events), result.stderr
    assert {e["level"] for e in events} <= {"warning", "error"}, result.stderr
    *rows, summary = [json.loads(line) for line in result.stdout.splitlines()]
    assert summary["summary"]["windows_completed"] == 3 * 3
    assert rows
    return rows


def test_the_installed_demo_runs_from_an_empty_folder_like_the_checkout(
        venv: Path, tmp_path: Path, redis_url: str, database_url: str, prefix: str,
        redis: object, pool: object) -> None:
    """The fixtures ``redis`` and ``pool`` drop the demo's keys and schema afterwards."""
    empty = tmp_path / "empty"
    empty.mkdir()
    python = venv / "bin" / "python"
    where = run([python, "-c", "import assay; print(assay.__file__)"], cwd=empty).stdout
    assert Path(where.strip()).is_relative_to(venv)
    version = run([venv / "bin" / "assay", "--version"], cwd=empty).stdout
    assert version.startswith("assay, version ")
    # The packaged config, through `assay init`, with the test's own schema.
    config = tmp_path / "config"
    run([venv / "bin" / "assay", "init", config], cwd=empty)
    pipeline = json.loads((config / "pipeline.json").read_text())
    pipeline["pipeline"]["db_schema"] = prefix
    (config / "pipeline.json").write_text(json.dumps(pipeline))
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url,
           "ASSAY_KEY_PREFIX": prefix, "ASSAY_CONFIG": str(config),
           "ASSAY_DATA_DIR": str(tmp_path / "data")}
    env.pop("PYTHONPATH", None)
    env.pop("ASSAY_LOG_LEVEL", None)
    installed = demo_kpis([venv / "bin" / "assay"], empty, env)
    assert list(empty.iterdir()) == []
    checkout = demo_kpis([sys.executable, "-m", "assay"], ROOT, env)
    assert installed == checkout
