"""``assay init``: a starter config folder, the demo's, for a user to edit."""

from __future__ import annotations

import shutil
from pathlib import Path

from assay.resources import CONFIG, STARTER, resource


def write_starter(folder: Path) -> list[Path]:
    """Copy the demo's config and a README explaining it into a new or empty folder; returns
    the files written. An existing file is never overwritten. (The JSON Schema stays outside:
    every ``*.json`` under a config folder is read as config.)"""
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty; assay init writes only into a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    sources = [*sorted(resource(CONFIG).glob("*.json")), resource(STARTER) / "README.md"]
    written = []
    for source in sources:
        target = folder / source.name
        shutil.copyfile(source, target)
        written.append(target)
    return written
