"""Every backup format ever written stays restorable: one fixture collection per version.

``tests/backup/fixtures/v<N>/`` holds a plain and an encrypted collection (a full backup and
an incremental with revision history, written by ``make_fixture.py`` with the binary of
that format) and what the restore must give.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import tidemark
from tidemark.backup.manifest import MANIFEST_FORMAT_VERSION

FIXTURES = Path(__file__).parent / "fixtures"
VERSIONS = sorted(int(p.name[1:]) for p in FIXTURES.iterdir() if p.name.startswith("v"))


def test_a_fixture_exists_for_the_current_format() -> None:
    assert MANIFEST_FORMAT_VERSION in VERSIONS, (
        "no fixture for the current manifest format: run tests/backup/make_fixture.py")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("kind", ["plain", "encrypted"])
def test_fixture_restores(tmp_path: Path, version: int, kind: str) -> None:
    src = FIXTURES / f"v{version}"
    expected = json.loads((src / "expected.json").read_text())
    coll = tmp_path / "coll"
    shutil.copytree(src / kind, coll)
    opts = f" WITH encryption_passphrase = '{expected['passphrase']}'" if kind == "encrypted" \
        else ""
    with tidemark.connect(tmp_path / "store") as conn:
        listed = conn.execute(f"SHOW BACKUPS IN 'file://{coll}'").rows
        assert len(listed) == 1
        check = " WITH check_files" + (f", encryption_passphrase = '{expected['passphrase']}'"
                                        if kind == "encrypted" else "")
        layers = conn.execute(f"SHOW BACKUP FROM LATEST IN 'file://{coll}'{check}").rows
        assert [r[4] for r in layers] == ["full", "incremental"]
        conn.execute(f"RESTORE DATABASE shop FROM LATEST IN 'file://{coll}'{opts}")
        got = {r[0]: str(r[1]) for r in
               conn.execute("SHOW FINGERPRINTS FROM TABLE shop.items").rows}
        assert got == expected["fingerprints"]
        assert conn.execute("SELECT count(*) FROM shop.items").rows[0][0] == expected["count"]
