"""`tidemark backup doctor`: structural, semantic and deep checks of real and synthetic chains.

Real chains come from BACKUP statements on a store in a temporary directory (file:// and
nodelocal:// collections); the unsafe ones reproduce the classic data-losing incremental with
``testing.backup.unsafe_mvcc_window_incrementals`` while a CREATE INDEX is paused in the middle
of its backfill. Synthetic chains (``write_manifest`` only, no data files) exercise long chains
and manifests no backup job writes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

import tidemark
from tidemark.backup import destination, doctor
from tidemark.backup.manifest import (
    MANIFEST,
    MANIFEST_CHECKSUM,
    BackupFile,
    DescriptorEntry,
    Manifest,
    Span,
    checksum_of,
    read_manifest,
    write_manifest,
)
from tidemark.catalog.descriptors import (
    Column,
    DatabaseDescriptor,
    Index,
    IndexState,
    TableDescriptor,
    encode_descriptor,
)
from tidemark.catalog.types import type_from_ref
from tidemark.cli.main import app
from tidemark.cloud import StorageContext, codec, open_storage
from tidemark.errors import JobPausedError
from tidemark.kv.keys import decode_index_prefix, index_prefix, prefix_end

PAUSE = "indexbackfill.after_first_chunk"
UNSAFE = "testing.backup.unsafe_mvcc_window_incrementals"
SECOND = 10**9


# -- building chains ----------------------------------------------------------------------


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["backup", "doctor", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout


def doctor_json(*args: str) -> tuple[int, dict]:
    code, out = run_cli(*args, "--json")
    return code, json.loads(out)


def problems(doc: dict, check: str | None = None, severity: str | None = None) -> list[dict]:
    return [p for c in doc["chains"] for p in c["problems"]
            if (check is None or p["check"] == check) and
            (severity is None or p["severity"] == severity)]


def new_store(path: Path, rows: int = 200) -> tidemark.Connection:
    c = tidemark.connect(path)
    c.execute("CREATE DATABASE d")
    c.execute("CREATE TABLE d.t (id INT PRIMARY KEY, v STRING, n INT)")
    c.execute("INSERT INTO d.t VALUES " +
              ", ".join(f"({i}, 'v{i}', {i % 7})" for i in range(rows)))
    return c


def backfill_chain(store: Path, collection: str, *, unsafe: bool,
                   incrementals: int = 1) -> None:
    """Full backup while CREATE INDEX t_n is paused after its first backfill chunk, then the
    backfill finishes, rows are written and ``incrementals`` incrementals taken."""
    c = new_store(store)
    try:
        if unsafe:
            c.execute(f"SET CLUSTER SETTING {UNSAFE} = true")
        c.execute("SET CLUSTER SETTING bulkio.index_backfill.batch_size = 20")
        c.execute(f"SET CLUSTER SETTING jobs.debug.pausepoints = '{PAUSE}'")
        with pytest.raises(JobPausedError) as paused:
            c.execute("CREATE INDEX t_n ON d.t (n)")
        c.execute("SET CLUSTER SETTING jobs.debug.pausepoints = ''")
        job_id = paused.value.job_id
        c.execute(f"BACKUP DATABASE d INTO '{collection}'")
        c.execute(f"RESUME JOB {job_id}")
        c.execute(f"SHOW JOB WHEN COMPLETE {job_id}")
        for i in range(incrementals):
            c.execute(f"INSERT INTO d.t VALUES ({1000 + i}, 'new', 3)")
            c.execute(f"BACKUP DATABASE d INTO LATEST IN '{collection}'")
    finally:
        c.close()


def plain_chain(store: Path, collection: str, incrementals: int = 2,
                passphrase: str | None = None) -> None:
    c = new_store(store)
    opts = f" WITH encryption_passphrase = '{passphrase}'" if passphrase else ""
    try:
        c.execute("CREATE INDEX t_v ON d.t (v)")
        c.execute(f"BACKUP DATABASE d INTO '{collection}'{opts}")
        for i in range(incrementals):
            c.execute(f"INSERT INTO d.t VALUES ({1000 + i}, 'x{i}', {i})")
            c.execute(f"BACKUP DATABASE d INTO LATEST IN '{collection}'{opts}")
    finally:
        c.close()


def layer_dirs(root: Path) -> list[Path]:
    """The layer folders of the only chain in the file:// collection at ``root``."""
    return sorted((p.parent for p in root.rglob(MANIFEST)),
                  key=lambda p: ("incrementals" in p.parts, str(p)))


@pytest.fixture
def testing_env(monkeypatch):
    monkeypatch.setenv("TIDEMARK_TESTING", "1")


@pytest.fixture
def healthy(tmp_path):
    root = tmp_path / "coll"
    plain_chain(tmp_path / "store", f"file://{root}")
    return root


@pytest.fixture
def unsafe_chain(tmp_path, testing_env):
    root = tmp_path / "coll"
    backfill_chain(tmp_path / "store", f"file://{root}", unsafe=True)
    return tmp_path / "store", root


# -- structural ---------------------------------------------------------------------------


def test_healthy_chain_passes(healthy):
    code, doc = doctor_json(f"file://{healthy}")
    assert code == 0, doc
    assert doc["healthy"] is True and doc["schema_version"] == 1
    [chain] = doc["chains"]
    assert [lay["backup_type"] for lay in chain["layers"]] == ["full", "incremental",
                                                                 "incremental"]
    assert chain["problems"] == []
    checked = {c["check"] for c in chain["checks"]}
    assert {"structural.manifest", "structural.files", "structural.times",
            "structural.coverage", "semantic.reintroduce"} <= checked
    assert all(c["status"] == "ok" for c in chain["checks"])
    code, text = run_cli(f"file://{healthy}")
    assert code == 0 and "healthy" in text


def test_corrupted_file_is_a_structural_problem(healthy):
    data = sorted(healthy.rglob("*.tdf"))[0]
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    code, doc = doctor_json(f"file://{healthy}")
    assert code == 1 and doc["healthy"] is False
    [found] = problems(doc, "structural.files")
    assert found["severity"] == "error" and "corrupt" in found["message"]
    assert found["message"].startswith(found["layer"])
    # --no-files reads manifests only: it cannot see that.
    code, doc = doctor_json(f"file://{healthy}", "--no-files")
    assert code == 0, problems(doc)


def test_missing_file(healthy):
    sorted(healthy.rglob("*.tdf"))[-1].unlink()
    code, doc = doctor_json(f"file://{healthy}")
    assert code == 1
    assert "missing" in problems(doc, "structural.files")[0]["message"]


def test_deleted_middle_manifest_is_a_gap(tmp_path):
    root = tmp_path / "coll"
    plain_chain(tmp_path / "store", f"file://{root}", incrementals=3)
    full, inc1, inc2, inc3 = layer_dirs(root)
    (inc2 / MANIFEST).unlink()
    code, doc = doctor_json(f"file://{root}", "--no-files")
    assert code == 1
    [gap] = problems(doc, "structural.times")
    assert gap["severity"] == "error" and gap["layer"].endswith(inc3.name)
    assert "a layer is missing" in gap["message"]
    [orphan] = problems(doc, "structural.chain")
    assert orphan["layer"].endswith(inc2.name) and "no manifest" in orphan["message"]
    assert [lay["dir"].rsplit("/", 1)[1] for lay in doc["chains"][0]["layers"]] == \
        [full.name, inc1.name, inc3.name]
    # RESTORE refuses the shortened chain (restoring over the gap would lose the missing
    # layer's rows): the deep pass reports that restore failing, naming the gap.
    code, doc = doctor_json(f"file://{root}", "--no-files", "--deep")
    assert code == 1
    failed = [p for p in doc["chains"][0]["problems"] if p["check"].startswith("deep")]
    assert failed and any("gap" in p["message"] for p in failed)


def test_corrupt_manifest_and_newer_format(tmp_path):
    root = tmp_path / "coll"
    plain_chain(tmp_path / "store", f"file://{root}", incrementals=2)
    _full, inc1, inc2 = layer_dirs(root)
    # inc1: bytes that do not match the checksum sidecar.
    stored = bytearray((inc1 / MANIFEST).read_bytes())
    stored[-1] ^= 1
    (inc1 / MANIFEST).write_bytes(bytes(stored))
    # inc2: a consistent manifest of a future format version.
    future = codec.encode(msgspec.msgpack.encode({"format_version": 99}))
    (inc2 / MANIFEST).write_bytes(future)
    (inc2 / MANIFEST_CHECKSUM).write_bytes(checksum_of(future))
    code, doc = doctor_json(f"file://{root}", "--no-files")
    assert code == 1
    [corrupt] = problems(doc, "structural.manifest")
    assert corrupt["layer"].endswith(inc1.name) and "checksum" in corrupt["message"]
    [newer] = problems(doc, "structural.format")
    assert newer["layer"].endswith(inc2.name) and "newer" in newer["message"]
    assert [lay["readable"] for lay in doc["chains"][0]["layers"]] == [True, False, False]


# -- semantic -----------------------------------------------------------------------------


def test_unsafe_chain_fails_naming_the_index(unsafe_chain):
    _store, root = unsafe_chain
    full, inc = layer_dirs(root)
    code, doc = doctor_json(f"file://{root}", "--no-files")
    assert code == 1
    [found] = problems(doc, "semantic.reintroduce")
    assert found["severity"] == "error"
    assert (found["table"], found["index"]) == ("d.t", "t_n")
    assert found["layer"].endswith(inc.name)
    assert "WRITE_ONLY" in found["message"]
    assert "that arrived after it may be missing" in found["message"]
    [layer0, layer1] = doc["chains"][0]["layers"]
    assert f"written before {layer0['end_time']}" in found["message"]
    assert layer1["end_time"] in found["message"]
    # The full backup exported the index while it was WRITE_ONLY: a warning of its own.
    [exported] = problems(doc, "semantic.not_public")
    assert exported["severity"] == "warning" and exported["layer"].endswith(full.name)
    # Structurally the chain is fine: RESTORE would accept it.
    assert problems(doc, severity="error") == [found]


def test_same_backfill_in_the_default_mode_is_healthy(tmp_path):
    root = tmp_path / "coll"
    backfill_chain(tmp_path / "store", f"file://{root}", unsafe=False)
    code, doc = doctor_json(f"file://{root}")
    assert code == 0, problems(doc)
    assert problems(doc) == []
    reintroduced = [c for c in doc["chains"][0]["checks"]
                    if c["check"] == "semantic.reintroduce"]
    assert "1 index(es) back to PUBLIC, re-exported" in reintroduced[0]["details"]


def test_deep_on_the_unsafe_chain_reports_the_rebuild(unsafe_chain):
    _store, root = unsafe_chain
    code, doc = doctor_json(f"file://{root}", "--deep")
    assert code == 1
    deep = [p for p in problems(doc) if p["check"].startswith("deep.")]
    assert deep, problems(doc)
    assert all(p["severity"] == "error" for p in deep)
    assert {(p["table"], p["index"]) for p in deep} == {("d.t", "t_n")}
    rebuilt = [p for p in deep if p["check"] == "deep.rebuild"]
    assert rebuilt and "rebuilt index d.t@t_n" in rebuilt[0]["message"]


def test_deep_on_a_healthy_chain(tmp_path):
    root = tmp_path / "coll"
    backfill_chain(tmp_path / "store", f"file://{root}", unsafe=False, incrementals=2)
    code, doc = doctor_json(f"file://{root}", "--deep", "--no-files")
    assert code == 0, problems(doc)
    checks = doc["chains"][0]["checks"]
    for name in ("deep.restore", "deep.index", "deep.fingerprint"):
        assert len([c for c in checks if c["check"] == name]) >= 3, name


def test_deep_finds_missing_index_entries(tmp_path):
    """An index with no schema-state history RESTORE would revalidate: only the deep
    comparison against the primary index (and the fingerprints) can see its entries gone."""
    root = tmp_path / "coll"
    plain_chain(tmp_path / "store", f"file://{root}", incrementals=0)
    [full] = layer_dirs(root)
    storage = open_storage(f"file://{root}")
    try:
        d = "/" + str(full.relative_to(root))
        m = read_manifest(storage, d)
        # Forget the data files of the secondary index, as if they had never been exported.
        kept = [f for f in m.files if decode_index_prefix(f.span.start)[1] == 1]
        assert len(kept) < len(m.files)
        write_manifest(storage, d, msgspec.structs.replace(m, files=kept))
    finally:
        storage.close()
    code, doc = doctor_json(f"file://{root}", "--deep", "--no-files")
    assert code == 1
    [index] = problems(doc, "deep.index")
    assert index["index"] == "t_v" and "200 entries missing" in index["message"]
    [fingerprint] = problems(doc, "deep.fingerprint")
    assert fingerprint["index"] == "t_v"


def import_chain(store: Path, collection: str) -> None:
    """Full backup while an IMPORT INTO d.t is paused after its first chunk (the table is
    OFFLINE), then the import finishes and an incremental is taken."""
    c = tidemark.connect(store)
    try:
        c.execute("CREATE DATABASE d")
        c.execute("CREATE TABLE d.t (id INT PRIMARY KEY, v STRING)")
        c.execute("CREATE INDEX t_v ON d.t (v)")
        c.execute("INSERT INTO d.t VALUES (1, 'a'), (2, 'b')")
        external = Path(c.node.engine.root) / "external"
        external.mkdir(exist_ok=True)
        (external / "a.csv").write_text("".join(f"{i},x{i}\n" for i in range(10, 500)))
        c.execute("SET CLUSTER SETTING bulkio.import.batch_size = 50")
        c.execute("SET CLUSTER SETTING jobs.debug.pausepoints = 'import.after_first_chunk'")
        with pytest.raises(JobPausedError) as paused:
            c.execute("IMPORT INTO d.t CSV DATA ('nodelocal://self/a.csv')")
        c.execute("SET CLUSTER SETTING jobs.debug.pausepoints = ''")
        c.execute(f"BACKUP DATABASE d INTO '{collection}'")
        c.execute(f"RESUME JOB {paused.value.job_id}")
        c.execute(f"SHOW JOB WHEN COMPLETE {paused.value.job_id}")
        c.execute(f"BACKUP DATABASE d INTO LATEST IN '{collection}'")
    finally:
        c.close()


@pytest.mark.parametrize("unsafe", [False, True])
def test_import_offline_in_the_previous_layer(tmp_path, testing_env, unsafe):
    store, root = tmp_path / "store", tmp_path / "coll"
    if unsafe:
        with tidemark.connect(store) as c:
            c.execute(f"SET CLUSTER SETTING {UNSAFE} = true")
    import_chain(store, f"file://{root}")
    code, doc = doctor_json(f"file://{root}", "--deep", "--no-files")
    if not unsafe:
        assert code == 0, problems(doc)
        notes = [n["message"] for n in doc["chains"][0]["notes"]]
        assert any("OFFLINE (importing)" in n for n in notes)
        ran = [c for c in doc["chains"][0]["checks"] if c["check"] == "semantic.import_cap"]
        assert any("read before their import" in c["details"] for c in ran), ran
        return
    assert code == 1
    # The full backup read the importing table as it was at its end, imported rows and all:
    # RESTORE refuses that layer.
    [cap] = problems(doc, "semantic.import_cap")
    assert cap["table"] == "d.t" and "not below the import's timestamp" in cap["message"]
    assert any(p["layer"] == cap["layer"] for p in problems(doc, "deep.restore"))
    found = problems(doc, "semantic.reintroduce")
    assert {p["index"] for p in found} == {"t_pkey", "t_v"}
    assert all("its table was OFFLINE (importing)" in p["message"] for p in found)
    assert any("rows written before" in p["message"] for p in found)
    # What the restore lost: the imported rows that arrived after the full backup.
    mismatched = problems(doc, "deep.fingerprint")
    assert "t_pkey" in {p["index"] for p in mismatched}


# -- repair -------------------------------------------------------------------------------


def test_repair_makes_the_unsafe_chain_pass(unsafe_chain):
    store, root = unsafe_chain
    c = tidemark.connect(store)
    c.execute(f"SET CLUSTER SETTING {UNSAFE} = false")
    c.close()
    code, doc = doctor_json(f"file://{root}", "--no-files", "--repair", "--store", str(store))
    assert code == 0, (problems(doc), doc.get("repairs"))
    [rep] = doc["repairs"]
    assert rep["error"] is None and rep["layer"]
    assert rep["reexported"] == [{"table": "d.t", "index": "t_n",
                                  "reason": "non_public_index"}]
    layers = doc["chains"][0]["layers"]
    assert len(layers) == 3 and layers[-1]["introduced_spans"] == 1
    # The old finding stays, as a warning naming the repair.
    [found] = problems(doc, "semantic.reintroduce")
    assert found["severity"] == "warning" and rep["layer"] in found["message"]
    code, again = doctor_json(f"file://{root}")
    assert code == 0 and again["healthy"]


def test_repair_refuses_while_the_unsafe_mode_is_on(unsafe_chain):
    store, root = unsafe_chain
    code, doc = doctor_json(f"file://{root}", "--no-files", "--repair", "--store", str(store))
    assert code == 1
    [rep] = doc["repairs"]
    assert UNSAFE in rep["error"]
    assert len(doc["chains"][0]["layers"]) == 2


def test_repair_needs_a_store(healthy):
    code, doc = doctor_json(f"file://{healthy}", "--repair")
    assert code == 2 and "--store" in doc["error"]["message"]


# -- collections that cannot be read ------------------------------------------------------


def test_unreadable_collections_exit_2(tmp_path, healthy):
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("hello")
    for uri in ["not a uri", f"file://{tmp_path}/nothing-here", f"file://{stranger}",
                "bogus://x/y"]:
        code, doc = doctor_json(uri)
        assert code == 2, uri
        assert doc["healthy"] is False and doc["error"]["message"], uri
    code, doc = doctor_json(f"file://{healthy}", "--subdir", "/2001/01/01-000000.00")
    assert code == 2 and "no such backup" in doc["error"]["message"]
    code, doc = doctor_json(f"file://{healthy}", "--passphrase", "secret")
    assert code == 2 and "not encrypted" in doc["error"]["message"]
    result = subprocess.run([sys.executable, "-m", "tidemark.cli.main", "backup", "doctor",
                             f"file://{stranger}"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "not a backup collection" in result.stderr


def test_encrypted_collection(tmp_path):
    root = tmp_path / "coll"
    plain_chain(tmp_path / "store", f"file://{root}", incrementals=1, passphrase="s3cret")
    code, doc = doctor_json(f"file://{root}")
    assert code == 2 and "encrypted" in doc["error"]["message"]
    code, doc = doctor_json(f"file://{root}", "--passphrase", "wrong")
    assert code == 2 and "wrong passphrase" in doc["error"]["message"]
    code, doc = doctor_json(f"file://{root}", "--passphrase", "s3cret", "--deep")
    assert code == 0, problems(doc)
    assert "s3cret" not in json.dumps(doc)


def test_nodelocal_collection_needs_the_store(tmp_path):
    store = tmp_path / "store"
    plain_chain(store, "nodelocal://self/coll", incrementals=1)
    code, doc = doctor_json("nodelocal://self/coll")
    assert code == 2 and "--store" in doc["error"]["hint"]
    code, doc = doctor_json("nodelocal://self/coll", "--store", str(store), "--deep",
                            "--subdir", "LATEST")
    assert code == 0, problems(doc)
    assert any(c["check"] == "deep.restore" for c in doc["chains"][0]["checks"])


# -- synthetic chains ---------------------------------------------------------------------


def _span(table_id: int, index_id: int) -> Span:
    p = index_prefix(table_id, index_id)
    return Span(p, prefix_end(p))


def synthetic_chain(uri: str, layers: int, tables: int = 10, *, break_at: int | None = None
                    ) -> list[str]:
    """Write a chain of ``layers`` manifests (no data files): ``tables`` tables of three
    indexes; with ``break_at``, index 3 of the first table is WRITE_ONLY before that layer
    and PUBLIC from it on, never re-exported (what the unsafe mode writes)."""
    storage = open_storage(uri, StorageContext())
    db = DatabaseDescriptor(id=100, name="d")
    cols = tuple(Column(i, f"c{i}", type_from_ref("INT8")) for i in (1, 2, 3))
    start = 1_795_000_000 * SECOND
    subdir = destination.new_full_subdir(start)
    dirs = []
    try:
        for k in range(layers):
            end = start + k * SECOND
            descs = [DescriptorEntry(id=db.id, name=db.name, parent_id=0, state="PUBLIC",
                                     descriptor=encode_descriptor(db))]
            spans = []
            for t in range(tables):
                state = IndexState.PUBLIC
                if t == 0 and break_at is not None and k < break_at:
                    state = IndexState.WRITE_ONLY
                table = TableDescriptor(
                    id=101 + t, name=f"t{t}", parent_id=db.id, columns=cols,
                    primary_index=Index(1, f"t{t}_pkey", (1,), (False,), unique=True),
                    indexes=(Index(2, f"t{t}_c2", (2,), (False,)),
                             Index(3, f"t{t}_c3", (3,), (False,), state=state)))
                descs.append(DescriptorEntry(id=table.id, name=table.name, parent_id=db.id,
                                             state="PUBLIC",
                                             descriptor=encode_descriptor(table)))
                spans += [_span(table.id, i) for i in (1, 2, 3)]
            files = [BackupFile(span=s, path=f"data/{n:06d}.tdf", rows=100, size=4096,
                                sha256="0" * 64) for n, s in enumerate(spans)]
            d = subdir if k == 0 else destination.new_incremental_dir(subdir, end)
            write_manifest(storage, d, Manifest(
                cluster_version="1.0", backup_type="full" if k == 0 else "incremental",
                start_time=0 if k == 0 else end - SECOND, end_time=end,
                target_databases=["d"], spans=spans, files=files, descriptors=descs))
            dirs.append(d)
        destination.write_latest(storage, subdir)
    finally:
        storage.close()
    return dirs


def test_synthetic_100_layer_chain(tmp_path):
    uri = f"file://{tmp_path}/coll"
    synthetic_chain(uri, 100)
    report = doctor.diagnose(uri, files=False)
    assert report.healthy, report.problems
    [chain] = report.chains
    assert len(chain.layers) == 100
    assert chain.status(chain.layers[-1].dir, "structural.coverage") == "ok"


def test_synthetic_chain_flags_the_transition(tmp_path):
    uri = f"file://{tmp_path}/coll"
    dirs = synthetic_chain(uri, 20, tables=3, break_at=7)
    report = doctor.diagnose(uri, files=False)
    [found] = [p for p in report.problems if p.check == "semantic.reintroduce"]
    assert found.severity == "error" and found.layer == dirs[7]
    assert (found.table, found.index) == ("d.t0", "t0_c3")
    assert "written before 1795000006000000000.0000000000" in found.message
    # Exported while WRITE_ONLY in layers 0..6: one warning each.
    warned = [p.layer for p in report.problems if p.check == "semantic.not_public"]
    assert warned == dirs[:7]


def test_synthetic_memory_chain_and_coverage_gap():
    uri = f"memory://doctor-{uuid.uuid4().hex[:8]}/coll"
    dirs = synthetic_chain(uri, 5, tables=1)
    storage = open_storage(uri, StorageContext())
    try:
        m = read_manifest(storage, dirs[2])
        gone = _span(101, 2)
        write_manifest(storage, dirs[2], msgspec.structs.replace(
            m, spans=[s for s in m.spans if s != gone],
            files=[f for f in m.files if f.span != gone]))
    finally:
        storage.close()
    report = doctor.diagnose(uri, files=False)
    [found] = [p for p in report.problems if p.check == "structural.coverage"]
    assert found.severity == "error" and found.layer == dirs[3]
    assert dirs[2] in found.message and found.index == "t0_c2"
