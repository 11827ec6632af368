"""What the installed product carries at run time, found through ``importlib.resources``.

The folders are linked into the package like the code (``assay/resources/config`` →
``config/`` and so on), so a checkout, an editable install and an installed wheel all find them
here: the AdventureWorks files with their licence and provenance, the demo's config and
Procfile, the config's JSON Schema, and the starter folder ``assay init`` writes.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def resource(name: str) -> Path:
    """The path of a file or folder shipped in this package (installed on disk, never zipped)."""
    return Path(str(files(__name__) / name))


ADVENTUREWORKS = "adventureworks"
"""Microsoft's AdventureWorks 2014 sample, gzip-compressed, with LICENSE and PROVENANCE.md."""
CONFIG = "config"
"""The demo's pipeline config (``config/*.json`` of the repository)."""
PROCFILE = "Procfile"
"""The demo's processes, one layer per line."""
SCHEMA = "schema"
"""The JSON Schema of a config file, for editors."""
STARTER = "starter"
"""What ``assay init`` adds to the demo's config: a README for the user who edits it."""
