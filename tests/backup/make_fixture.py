"""Write the fixture backup collection of the current manifest format version.

Run once per format version (``python tests/backup/make_fixture.py``) and commit the result
under ``tests/backup/fixtures/v<N>/``; never regenerate an existing version's fixture: it
stands for backups users already hold, which every later binary must still restore.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import tidemark
from tidemark.backup.manifest import MANIFEST_FORMAT_VERSION

PASSPHRASE = "fixture passphrase"


def main() -> None:
    out = Path(__file__).parent / "fixtures" / f"v{MANIFEST_FORMAT_VERSION}"
    if out.exists():
        sys.exit(f"{out} exists: fixtures of a released format are never rewritten")
    with tempfile.TemporaryDirectory() as tmp:
        conn = tidemark.connect(Path(tmp) / "store")
        x = conn.execute
        x("CREATE DATABASE shop")
        x("CREATE TABLE shop.items (id INT PRIMARY KEY, name STRING, price DECIMAL(8,2), "
          "tags JSONB, seen TIMESTAMP)")
        x("CREATE INDEX items_name ON shop.items (name) STORING (price)")
        x("INSERT INTO shop.items VALUES " + ", ".join(
            f"({i}, 'item{i % 13}', {i}.25, '{{\"n\": {i}}}', '2026-01-0{1 + i % 9} 10:00:00')"
            for i in range(1, 61)))
        for name, opts in (("plain", ""), ("encrypted", f", encryption_passphrase = "
                                                         f"'{PASSPHRASE}'")):
            coll = f"nodelocal://self/{name}"
            x(f"BACKUP DATABASE shop INTO '{coll}' WITH revision_history{opts}")
        x("UPDATE shop.items SET price = price + 1 WHERE id < 10")
        x("DELETE FROM shop.items WHERE id > 55")
        x("CREATE UNIQUE INDEX items_seen ON shop.items (seen, id)")
        for name, opts in (("plain", ""), ("encrypted", f", encryption_passphrase = "
                                                         f"'{PASSPHRASE}'")):
            coll = f"nodelocal://self/{name}"
            x(f"BACKUP DATABASE shop INTO LATEST IN '{coll}' WITH revision_history{opts}")
        expected = {
            "passphrase": PASSPHRASE,
            "fingerprints": {r[0]: str(r[1]) for r in
                             x("SHOW FINGERPRINTS FROM TABLE shop.items").rows},
            "count": x("SELECT count(*) FROM shop.items").rows[0][0],
        }
        conn.close()
        out.mkdir(parents=True)
        for name in ("plain", "encrypted"):
            shutil.copytree(Path(tmp) / "store" / "external" / name, out / name)
        (out / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
