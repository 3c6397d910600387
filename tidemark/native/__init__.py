"""The optional C part of tidemark: a SQLite extension computing index fingerprints.

``fingerprint.c`` defines the SQL aggregate ``tm_fingerprint(key, value, prefix_len)``, the
same sum of entry hashes as ``tidemark.catalog.fingerprint`` but run inside the statement
reading the rows (about 20x faster than a Python loop). ``make`` builds it into this folder
(``python -m tidemark.native``); without a C compiler or SQLite's headers tidemark works the
same, only its backups fingerprint in Python. ``TIDEMARK_NO_NATIVE=1`` ignores a built
extension (to test the fallback, or to rule the extension out).

``load(conn)`` adds the function to an apsw connection and says whether it could.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

import apsw

__all__ = ["LIBRARY", "available", "build", "load"]

SOURCE = Path(__file__).with_name("fingerprint.c")
LIBRARY = Path(__file__).with_name("tidemark_fp" + (sysconfig.get_config_var("SHLIB_SUFFIX")
                                                    or ".so"))
_ENTRY = "sqlite3_tidemarkfp_init"
_lock = threading.Lock()
_usable: bool | None = None  # None: not tried yet in this process


def available() -> bool:
    """Whether connections get ``tm_fingerprint`` (built, loadable, and not turned off)."""
    global _usable
    if os.environ.get("TIDEMARK_NO_NATIVE") == "1":
        return False
    with _lock:
        if _usable is None:
            _usable = _try_load()
        return _usable


def _try_load() -> bool:
    if not LIBRARY.exists() or LIBRARY.stat().st_mtime < SOURCE.stat().st_mtime:
        return False  # never built, or built from an older source: do not trust it
    conn = apsw.Connection(":memory:")
    try:
        _load(conn)
        return True
    except apsw.Error:
        return False
    finally:
        conn.close()


def _load(conn: apsw.Connection) -> None:
    conn.enable_load_extension(True)
    try:
        conn.load_extension(str(LIBRARY), _ENTRY)
    finally:
        conn.enable_load_extension(False)  # SQL cannot load_extension() anything else


def load(conn: apsw.Connection) -> bool:
    """Add ``tm_fingerprint`` to ``conn``; False when the extension is not available."""
    if not available():
        return False
    _load(conn)
    return True


def build(out: Path = LIBRARY) -> Path:
    """Compile ``fingerprint.c`` into ``out`` with the C compiler Python was built with."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()
    if shutil.which(cc[0]) is None:
        cc = ["cc"]
    tmp = out.with_name(out.name + ".tmp")
    cmd = [*cc, "-O2", "-shared", "-fPIC", "-o", str(tmp), str(SOURCE)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    os.replace(tmp, out)  # a half-written library is never loaded
    return out


def main() -> int:
    """``python -m tidemark.native``: build the extension; a failure is a warning, not an
    error (tidemark then fingerprints in Python)."""
    try:
        path = build()
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        print(f"tidemark: the C fingerprint extension was not built; backups will fingerprint "
              f"in Python (slower). {detail.strip()[:500]}", file=sys.stderr)
        return 0
    global _usable
    _usable = None
    if not available():
        print(f"tidemark: built {path} but could not load it; backups will fingerprint in "
              "Python", file=sys.stderr)
    return 0
