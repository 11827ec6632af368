"""The package layout: one ``assay`` namespace that mypy resolves to the real sources, and
imports that point downward (contracts ← streams ← processors/db ← the face)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {
    "contracts": {"contracts"},
    "streams": {"contracts", "streams"},
    "db": {"contracts", "db"},
}
"""What each room may import of assay."""


def assay_imports(path: Path) -> set[str]:
    """The rooms (``assay.<room>``) a module imports from."""
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        rooms |= {n.split(".")[1] for n in names if n.startswith("assay.")}
    return rooms


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_imports_point_downward(room: str) -> None:
    wrong = {str(p.relative_to(ROOT)): sorted(assay_imports(p) - ALLOWED[room])
             for p in (ROOT / room).rglob("*.py")}
    assert {p: rooms for p, rooms in wrong.items() if rooms} == {}


def test_mypy_checks_assay_modules_reached_through_the_links(tmp_path: Path) -> None:
    """A deliberate type error against assay.streams (a link to streams/) is caught: the
    module is resolved to its source, not ignored as a missing import."""
    probe = tmp_path / "probe.py"
    probe.write_text("from assay.streams.keys import Keys\n\n"
                     "prefix: int = Keys().prefix\n"
                     "Keys().stream(1, 'dead')\n")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--config-file",
         str(ROOT / "pyproject.toml"), str(probe)],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'Incompatible types in assignment (expression has type "str", variable has type' \
        ' "int")' in result.stdout
    assert 'Argument 1 to "stream" of "Keys" has incompatible type "int"' in result.stdout
    assert "import-not-found" not in result.stdout and "import-untyped" not in result.stdout
