"""`make demo` is the first thing a new user runs: it must run to the end, and every
fingerprint comparison in it must match (the demo itself exits non-zero when one does not)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_SCRIPT = Path(sys.executable).with_name("tidemark")
TIDEMARK = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "tidemark.cli.main"]


def test_the_demo_runs_to_the_end_and_every_restore_matches(tmp_path):
    proc = subprocess.run([*TIDEMARK, "demo", "--store", str(tmp_path / "store")],
                          capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for n in range(1, 8):
        assert f" {n}. " in out, f"section {n} of the demo is missing"
    compared = [line for line in out.splitlines() if "│ equal" in line or "DIFFERENT" in line]
    assert len(compared) >= 4 and not any("DIFFERENT" in line for line in compared), compared
    assert out.rstrip().endswith("healthy")
