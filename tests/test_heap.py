"""The garbage collector settings of a layer process (``assay.streams.heap``)."""

from __future__ import annotations

import subprocess
import sys


def test_settle_freezes_start_up_and_raises_the_first_threshold() -> None:
    # In a process of its own: the settings are the whole process's.
    code = ("import gc; from assay.streams import heap; before = gc.get_threshold();"
            " heap.settle(); after = gc.get_threshold();"
            " print(gc.get_freeze_count() > 1000, after[0] == heap.GEN0, after[1:] == before[1:])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "True"]
