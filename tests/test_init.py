"""``assay init DIR``: a starter config folder that passes ``assay check``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def assay(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "assay", *map(str, args)], capture_output=True,
                          text=True, check=False, timeout=120)


def test_init_writes_the_demo_config_and_a_readme_that_check_accepts(tmp_path: Path) -> None:
    folder = tmp_path / "my-pipeline"
    result = assay("init", folder)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*(p.name for p in (ROOT / "config").glob("*.json")), "README.md"])
    for file in (ROOT / "config").glob("*.json"):
        assert (folder / file.name).read_text() == file.read_text()
    assert "assay check" in (folder / "README.md").read_text()
    checked = assay("check", folder)
    assert checked.returncode == 0 and "ok (9 tables, 3 divisions)" in checked.stdout


def test_init_never_overwrites(tmp_path: Path) -> None:
    folder = tmp_path / "taken"
    folder.mkdir()
    (folder / "pipeline.json").write_text("{}")
    result = assay("init", folder)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {folder} is not empty; assay init writes only" \
        " into a new folder"
    assert (folder / "pipeline.json").read_text() == "{}"
