"""BACKUP, RESTORE, SHOW BACKUPS and SHOW BACKUP: plan the statement, create the job, wait.

The statements follow CockroachDB's syntax and result columns. Planning happens here, before
any job exists, so that a typo, a missing table, a wrong passphrase or a name already taken
fails the statement rather than a job. Credentials (the collection URI with its keys, the
passphrase) go to the store's job-secrets table; job records and descriptions hold only the
redacted URI and ``encryption_passphrase = 'redacted'``.
"""

from __future__ import annotations

import re
import secrets as pysecrets
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from tidemark.backup import destination, manifest
from tidemark.backup.chain import (
    Chain,
    Layer,
    base_layer,
    databases_and_tables,
    descriptors_at,
    files_for,
    load_chain,
)
from tidemark.backup.job import BACKUP, BackupDetails, Secrets, storage_context
from tidemark.backup.manifest import EncryptionInfo, Manifest
from tidemark.backup.manifest import Span as MSpan
from tidemark.backup.plan import (
    RESTORING,
    SETTINGS_SPAN,
    UNSAFE_SETTING,
    Targets,
    resolve_targets,
)
from tidemark.backup.plan import span_table_id as _span_table
from tidemark.backup.restore import (
    RESTORE,
    RestoreDetails,
    RestoreSpan,
    RestoreTable,
    SourceFile,
    restored_descriptor,
)
from tidemark.backup.verify import check_files
from tidemark.catalog import catalog
from tidemark.catalog.descriptors import (
    DatabaseDescriptor,
    DescState,
    TableDescriptor,
    decode_descriptor,
)
from tidemark.clock import format_ts, wall_now
from tidemark.cloud import open_storage, parse_uri, redact_uri
from tidemark.cloud.codec import EncryptionKey
from tidemark.cloud.storage import ExternalStorage
from tidemark.errors import SQLError, TidemarkError
from tidemark.kv.keys import decode_index_prefix, index_prefix, prefix_end
from tidemark.kv.system import PRIMARY_INDEX_ID
from tidemark.kv.txn import Txn
from tidemark.sql import ast
from tidemark.sql.expr import Compiler, Context, Scope
from tidemark.sql.import_stmt import expect_string
from tidemark.sql.result import Result

if TYPE_CHECKING:
    from tidemark.sql.session import Session

__all__ = ["run_backup", "run_restore", "show_backup", "show_backups"]

JOB_COLUMNS = ["job_id", "status", "fraction_completed", "rows", "index_entries", "bytes"]
_BACKUP_OPTIONS = {"revision_history", "encryption_passphrase", "detached"}
_RESTORE_OPTIONS = {"into_db", "new_db_name", "encryption_passphrase", "detached"}
_SHOW_OPTIONS = {"check_files", "encryption_passphrase"}
_FOLDER_ATTEMPTS = 100  # hundredths of a second a BACKUP waits for a free folder name


# -- helpers -------------------------------------------------------------------------------


def _const(expr: ast.Expr, params: Sequence[Any]) -> Any:
    return Compiler(Scope(), Context(params)).compile(expr)([])


def _options(options: Sequence[ast.Option], allowed: set[str], stmt: str,
             params: Sequence[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for o in options:
        name = o.name.lower()
        if name not in allowed:
            raise SQLError(f"{stmt}: unknown option {o.name!r}", code="42601",
                           hint=f"{stmt} takes {', '.join(sorted(allowed))}")
        value = True if o.value is None else _const(o.value, params)
        out[name] = value
    for flag in ("revision_history", "detached", "check_files"):
        if flag in out and not isinstance(out[flag], bool):
            raise SQLError(f"{stmt}: option {flag} takes no value or a boolean", code="22023",
                           hint=f"WITH {flag}, or WITH {flag} = true / false")
    for text in ("encryption_passphrase", "into_db", "new_db_name"):
        if text not in out:
            continue
        value, hint = out[text], f"WITH {text} = '...'"
        if value is True and not any(o.name.lower() == text and o.value is not None
                                     for o in options):
            raise SQLError(f"{stmt}: option {text} needs a value", code="22023", hint=hint)
        if not isinstance(value, str):
            shown = "NULL" if value is None else str(value).lower() if isinstance(
                value, bool) else repr(value)
            raise SQLError(f"{stmt}: option {text} takes a string, not {shown}",
                           code="22023", hint=hint)
        if not value:
            raise SQLError(f"{stmt}: option {text} must not be empty", code="22023",
                           hint=hint)
    return out


_PASSPHRASE_RE = re.compile(r"(encryption_passphrase\s*=\s*)(?:'(?:[^']|'')*'|\$\d+)",
                            re.IGNORECASE)
_URI_LITERAL_RE = re.compile(r"'(?:[^']|'')*'")


def _description(stmt: ast.Statement, uri: str, options: dict[str, Any]) -> str:
    """The statement for job records and SHOW JOBS: the passphrase and every credential in a
    URI literal redacted, whatever quoting the user wrote them with."""
    text = _PASSPHRASE_RE.sub(r"\1'redacted'", stmt.text)
    text = _URI_LITERAL_RE.sub(
        lambda m: "'" + redact_uri(m.group(0)[1:-1].replace("''", "'")).replace("'", "''")
        + "'" if "://" in m.group(0) else m.group(0), text)
    for secret in filter(None, [options.get("encryption_passphrase"), *_uri_secrets(uri)]):
        for form in (secret, secret.replace("'", "''")):
            text = text.replace(form, "redacted")  # a last guard; the above should suffice
    return text


def _uri_secrets(uri: str) -> list[str]:
    try:
        return parse_uri(uri).secrets()
    except TidemarkError:
        return []


def _job_result(session: Session, job_id: int, detached: bool, tag: str) -> Result:
    if detached:
        session.registry.start_adopting()  # runs in the background (any node may)
        return Result(columns=["job_id"], rows=[(job_id,)], tag=tag, rows_affected=1,
                      types=[None])
    record = session.wait_job(job_id)
    cp = record.checkpoint
    row = (job_id, str(record.status), round(record.fraction_completed, 4), cp.get("rows", 0),
           cp.get("index_entries", 0), cp.get("bytes", 0))
    notices = [f"rebuilt index {name}: it did not match its table in the backup"
               for name in cp.get("rebuilt", [])]
    return Result(columns=list(JOB_COLUMNS), rows=[row], tag=tag, rows_affected=1,
                  types=[None] * len(JOB_COLUMNS), notices=notices)


def _keep_secret(session: Session, uri: str, passphrase: str | None) -> str:
    ref = f"secret-{pysecrets.token_hex(8)}"
    session.node.engine.put_secret(ref, msgspec.msgpack.encode(Secrets(uri, passphrase)))
    return ref


def _open(session: Session, uri: str) -> ExternalStorage:
    return open_storage(uri, storage_context(session.node))


# -- BACKUP --------------------------------------------------------------------------------


def _targets(session: Session, stmt: ast.Backup) -> Targets:
    if not stmt.tables and not stmt.databases:
        return Targets(full_cluster=True)
    tables = [f"{t.database or session.database}.{t.name}" for t in stmt.tables]
    return Targets(databases=list(stmt.databases), tables=tables)


def run_backup(session: Session, stmt: ast.Backup, params: Sequence[Any],
               reintroduce: Sequence[MSpan] = ()) -> Result:
    """BACKUP; ``reintroduce`` (the doctor's repair) names spans an incremental must export
    from time zero."""
    if reintroduce and not (stmt.latest or stmt.subdir is not None):
        raise SQLError("only an incremental backup re-introduces spans", code="22023")
    uri = expect_string(_const(stmt.collection, params), "the backup collection URI")
    opts = _options(stmt.options, _BACKUP_OPTIONS, "BACKUP", params)
    passphrase = opts.get("encryption_passphrase")
    engine = session.node.engine
    end = session._as_of(stmt.as_of, params) if stmt.as_of is not None else wall_now()
    engine.close_timestamp(end)  # refuses the future; makes reads at `end` stable
    targets = _targets(session, stmt)
    txn = session.db.txn(end)
    try:
        resolve_targets(txn, targets)  # a missing table fails here, not in the job
    finally:
        txn.rollback()
    storage = _open(session, uri)
    try:
        if destination.read_latest(storage) is None:
            # Listing every file costs as much as the collection is big: a folder with a
            # valid LATEST is a collection (files of its own are ignored, as SHOW BACKUPS
            # does), only a new or foreign folder needs the check.
            destination.check_collection(storage)
        incremental = stmt.latest or stmt.subdir is not None
        for _ in range(_FOLDER_ATTEMPTS):
            if incremental:
                details = _plan_incremental(session, stmt, params, storage, targets, end,
                                            passphrase)
                taken = destination.in_use(storage, details["layer_dir"])
            else:
                subdir = destination.new_full_subdir(end)
                taken = (destination.in_use(storage, subdir) or
                         destination.in_use(storage, destination.incrementals_dir(subdir)))
                details = dict(full_subdir=subdir, layer_dir=subdir, backup_type="full",
                               start_time=0, prev_layer=None, encryption=None)
            if not taken:
                break
            if stmt.as_of is not None:
                raise SQLError(
                    f"{redact_uri(uri)}{details['layer_dir']}: the folder of a backup ending "
                    f"at {format_ts(end)} is already used by another backup", code="42710",
                    hint="pick another AS OF SYSTEM TIME, or check SHOW JOBS for a paused "
                    "backup writing there")
            # Folder names have hundredths of a second: a backup started right after
            # another (or while one is paused) waits for a name of its own.
            time.sleep(0.01)
            end = wall_now()
            engine.close_timestamp(end)
        else:
            raise SQLError(f"{redact_uri(uri)}: found no free backup folder name",
                           code="42710", hint="run BACKUP again")
        if not incremental and passphrase:
            details["encryption"] = EncryptionInfo.from_key(
                EncryptionKey.from_passphrase(passphrase))
    finally:
        storage.close()
    ref = _keep_secret(session, uri, passphrase)
    full = BackupDetails(
        collection=redact_uri(uri), secret_ref=ref, end_time=end,
        revision_history=bool(opts.get("revision_history")),
        full_cluster=targets.full_cluster, databases=targets.databases, tables=targets.tables,
        unsafe=bool(session.node.settings.get(UNSAFE_SETTING.name)) and not reintroduce,
        reintroduce=list(reintroduce), **details)

    def create(txn: Txn) -> int:
        return session.registry.create(txn, BACKUP, _description(stmt, uri, opts),
                                       msgspec.to_builtins(full))
    try:
        job_id = session.db.run(create)
    except BaseException:
        engine.delete_secret(ref)
        raise
    return _job_result(session, job_id, bool(opts.get("detached")), "BACKUP")


def _plan_incremental(session: Session, stmt: ast.Backup, params: Sequence[Any],
                      storage: ExternalStorage, targets: Targets, end: int,
                      passphrase: str | None) -> dict[str, Any]:
    if stmt.latest:
        subdir = destination.read_latest(storage)
        if subdir is None:
            destination.explain_no_latest(storage)
            raise SQLError(
                f"{storage.uri}: no full backup to append an incremental to (no LATEST)",
                code="58P01", hint="take a full backup first: BACKUP ... INTO '<collection>'")
    else:
        subdir = expect_string(_const(stmt.subdir, params), "the backup subdir")  # type: ignore[arg-type]
    layers = destination.chain(storage, subdir)
    full = manifest.read_manifest(storage, layers[0], passphrase)
    prev = full if len(layers) == 1 else manifest.read_manifest(storage, layers[-1], passphrase)
    asked = (targets.full_cluster, sorted(targets.databases), sorted(targets.tables))
    had = (full.is_full_cluster, sorted(full.target_databases), sorted(full.target_tables))
    if asked != had:
        raise SQLError(
            f"the incremental's targets ({targets.describe()}) differ from those of the full "
            f"backup {subdir} ({_describe(full)})", code="22023",
            hint="back up the same targets, or start a new chain with BACKUP ... INTO")
    if end <= prev.end_time:
        raise SQLError(
            f"an incremental backup must end after the previous one ({format_ts(prev.end_time)}"
            f"), not at {format_ts(end)}", code="22023",
            hint="use a later AS OF SYSTEM TIME, or none")
    layer_dir = destination.new_incremental_dir(subdir, end)
    return dict(full_subdir=subdir, layer_dir=layer_dir, backup_type="incremental",
                start_time=prev.end_time, prev_layer=layers[-1], encryption=full.encryption)


def _describe(m: Manifest) -> str:
    return Targets(m.is_full_cluster, m.target_databases, m.target_tables).describe()


# -- RESTORE -------------------------------------------------------------------------------


def _revalidate(layers: list[Layer], base: int, old: TableDescriptor, index_id: int) -> bool:
    """Was the index not PUBLIC (or its table OFFLINE) in a layer its data comes from?"""
    for layer in layers[base:]:
        entry = next((e for e in layer.manifest.descriptors if e.id == old.id), None)
        if entry is None:
            return True
        desc = decode_descriptor(entry.descriptor)
        if not isinstance(desc, TableDescriptor) or desc.state is not DescState.PUBLIC:
            return True
        index = next((i for i in desc.public_indexes() if i.id == index_id), None)
        if index is None:
            return True
    return False


def _spans_for(layers: list[Layer], old: TableDescriptor, new_id: int, as_of: int
               ) -> tuple[list[RestoreSpan], list[int]]:
    spans, revalidate = [], []
    for index in old.public_indexes():
        p = index_prefix(old.id, index.id)
        span = MSpan(p, prefix_end(p))
        files = files_for(layers, span, f'index "{index.name}" of table "{old.name}"')
        used = {k for k, _ in files}
        base = base_layer(layers, span) or 0
        single = len(used) <= 1 and all(layers[k].manifest.mvcc_filter == "latest"
                                         for k in used) and \
            as_of == layers[-1].manifest.end_time
        spans.append(RestoreSpan(
            table_id=new_id, index_id=index.id, old_prefix=p,
            new_prefix=index_prefix(new_id, index.id),
            files=[SourceFile(layers[k].dir, f) for k, f in files], merge=not single,
            as_of=None if single else as_of))
        if index.id != old.primary_index.id and _revalidate(layers, base, old, index.id):
            revalidate.append(index.id)
    return spans, revalidate


def _not_in_backup_hint(at: str) -> str:
    if at:
        return ("it did not exist then, or was not a target of the backup: SHOW BACKUP lists "
                "what each layer holds at its end time; restore to a time when it existed")
    return "SHOW BACKUP lists what it holds"


def run_restore(session: Session, stmt: ast.Restore, params: Sequence[Any]) -> Result:
    uri = expect_string(_const(stmt.collection, params), "the backup collection URI")
    opts = _options(stmt.options, _RESTORE_OPTIONS, "RESTORE", params)
    passphrase = opts.get("encryption_passphrase")
    if "into_db" in opts and not stmt.tables:
        raise SQLError("RESTORE: into_db applies to RESTORE TABLE only", code="22023",
                       hint="use new_db_name to rename a restored database")
    if "new_db_name" in opts and len(set(stmt.databases)) != 1:
        raise SQLError("RESTORE: new_db_name applies to RESTORE DATABASE of one database",
                       code="22023")
    subdir = "LATEST" if stmt.latest else expect_string(_const(stmt.subdir, params), "a subdir")  # type: ignore[arg-type]
    storage = _open(session, uri)
    try:
        chain = load_chain(storage, subdir, passphrase)
    finally:
        storage.close()
    target = session._as_of(stmt.as_of, params) if stmt.as_of is not None else chain.end_time
    layers = chain.upto(target)
    # What existed at the target time: a dropped database or table stays in the descriptors
    # of a revision-history layer (state DROP) but is not restored.
    dbs, tables = databases_and_tables({
        i: desc for i, desc in descriptors_at(layers, target).items()
        if desc.state is not DescState.DROP})
    db_names = {d.id: d.name for d in dbs.values()}
    at = "" if target == chain.end_time else f" at {format_ts(target)}"
    settings: list[SourceFile] = []
    if not stmt.tables and not stmt.databases:
        if not chain.full.is_full_cluster:
            raise SQLError(
                f"{chain.subdir} is not a full-cluster backup: a bare RESTORE needs one",
                code="22023", hint="name what to restore: RESTORE DATABASE d / RESTORE TABLE "
                "db.t FROM ...")
        settings = [SourceFile(layers[k].dir, f) for k, f in
                    files_for(layers, MSpan(*SETTINGS_SPAN), "the cluster settings")]

    restorable = {i: t for i, t in tables.items()
                  if not (t.state is DescState.OFFLINE and t.offline_reason == RESTORING)}

    def plan(txn: Txn) -> RestoreDetails:
        chosen: list[tuple[TableDescriptor, str]] = []  # (old table, destination db name)
        new_dbs: dict[str, int] = {}
        if stmt.tables:
            named: set[tuple[str, str]] = set()
            for tn in stmt.tables:
                db_name = tn.database or session.database
                if (db_name, tn.name) in named:
                    continue  # named twice: restored once (as BACKUP backs it up once)
                named.add((db_name, tn.name))
                old = next((t for t in tables.values() if t.name == tn.name and
                            db_names.get(t.parent_id) == db_name), None)
                if old is None:
                    raise SQLError(f'table "{db_name}.{tn.name}" is not in the backup{at}',
                                   code="42P01", hint=_not_in_backup_hint(at))
                if old.id not in restorable:
                    raise SQLError(f'table "{db_name}.{tn.name}" was being restored when the '
                                   "backup was taken: it holds no data to restore",
                                   code="55000")
                chosen.append((old, opts.get("into_db", db_name)))
        else:
            if stmt.databases:
                wanted = list(dict.fromkeys(stmt.databases))  # each once, as BACKUP does
                missing = [n for n in wanted if n not in db_names.values()]
                if missing:
                    raise SQLError(f'database "{missing[0]}" is not in the backup{at}',
                                   code="3D000", hint=_not_in_backup_hint(at))
            else:
                _check_empty_cluster(txn)
                wanted = sorted(db_names.values())
            for name in wanted:
                dest = opts.get("new_db_name", name)
                existing = catalog.database_by_name(txn, dest)
                if existing is not None and not (not stmt.databases and dest ==
                                                 catalog.DEFAULT_DATABASE):
                    raise SQLError(
                        f'database "{dest}" already exists', code="42P04",
                        hint="restore under another name WITH new_db_name = '...'")
                if existing is None:
                    desc = DatabaseDescriptor(id=catalog.allocate_id(txn), name=dest,
                                              state=DescState.OFFLINE)
                    catalog.write_descriptor(txn, desc, new=True)
                    catalog.set_name(txn, 0, dest, desc.id)
                    new_dbs[dest] = desc.id
                db_id = next(i for i, n in db_names.items() if n == name)
                chosen += [(t, dest) for t in restorable.values() if t.parent_id == db_id]
        out_tables, out_spans = [], []
        for old, dest in sorted(chosen, key=lambda c: c[0].id):
            parent = new_dbs.get(dest)
            if parent is None:
                db = catalog.database_by_name(txn, dest)
                if db is None or db.state is not DescState.PUBLIC:
                    raise SQLError(f'database "{dest}" does not exist', code="3D000",
                                   hint="create it, or restore into another WITH into_db")
                parent = db.id
            if catalog.lookup_id(txn, parent, old.name) is not None:
                raise SQLError(
                    f'relation "{dest}.{old.name}" already exists', code="42P07",
                    hint="restore into another database WITH into_db = '...' (or "
                    "new_db_name for a database), or drop it first")
            new_id = catalog.allocate_id(txn)
            as_of = target if not (old.state is DescState.OFFLINE and old.import_ts) else \
                min(target, old.import_ts - 1)
            spans, revalidate = _spans_for(layers, old, new_id, as_of)
            catalog.write_descriptor(txn, restored_descriptor(old, new_id, parent), new=True)
            catalog.set_name(txn, parent, old.name, new_id)
            out_tables.append(RestoreTable(old_id=old.id, new_id=new_id, name=old.name,
                                           database=dest, revalidate=revalidate))
            out_spans += spans
        return RestoreDetails(
            collection=redact_uri(uri), secret_ref=ref, subdir=chain.subdir,
            target_time=target, tables=out_tables, spans=out_spans,
            new_databases=list(new_dbs.values()), settings=settings,
            encryption=chain.full.encryption)

    ref = _keep_secret(session, uri, passphrase)

    def create(txn: Txn) -> int:
        details = plan(txn)
        return session.registry.create(txn, RESTORE, _description(stmt, uri, opts),
                                       msgspec.to_builtins(details))
    try:
        job_id = session.db.run(create)
    except BaseException:
        session.node.engine.delete_secret(ref)
        raise
    return _job_result(session, job_id, bool(opts.get("detached")), "RESTORE")


def _check_empty_cluster(txn: Txn) -> None:
    for name, db_id in catalog.list_names(txn, 0):
        tables = catalog.list_names(txn, db_id)
        if name != catalog.DEFAULT_DATABASE or tables:
            what = f'database "{name}"' + (f' (table "{tables[0][0]}")' if tables else "")
            raise SQLError(
                f"a full-cluster RESTORE needs an empty cluster, but this one has {what}",
                code="55000", hint="restore into a new store, or restore databases or tables "
                "by name: RESTORE DATABASE d FROM ...")


# -- SHOW ----------------------------------------------------------------------------------


def show_backups(session: Session, stmt: ast.ShowBackups, params: Sequence[Any]) -> Result:
    uri = expect_string(_const(stmt.collection, params), "the backup collection URI")
    storage = _open(session, uri)
    try:
        paths = destination.list_full_backups(storage, destination.check_collection(storage))
    finally:
        storage.close()
    return Result(columns=["path"], rows=[(p,) for p in paths], tag="SHOW",
                  rows_affected=len(paths), types=[None])


SHOW_COLUMNS = ["database_name", "table_name", "start_time", "end_time", "backup_type",
                "rows", "size_bytes", "is_full_cluster"]


def show_backup(session: Session, stmt: ast.ShowBackup, params: Sequence[Any]) -> Result:
    uri = expect_string(_const(stmt.collection, params), "the backup collection URI")
    opts = _options(stmt.options, _SHOW_OPTIONS, "SHOW BACKUP", params)
    passphrase = opts.get("encryption_passphrase")
    subdir = "LATEST" if stmt.latest else expect_string(_const(stmt.subdir, params), "a subdir")  # type: ignore[arg-type]
    storage = _open(session, uri)
    try:
        chain = load_chain(storage, subdir, passphrase)
        if opts.get("check_files"):
            problems = check_files(storage, chain)
            if problems:
                listed = "\n".join(f"  {p}" for p in problems)
                raise SQLError(
                    f"{len(problems)} backup file(s) in {redact_uri(uri)} are missing or "
                    f"corrupt:\n{listed}", code="XX001",
                    hint="restore from another backup, or take a new full backup")
    finally:
        storage.close()
    return Result(columns=list(SHOW_COLUMNS), rows=layer_rows(chain), tag="SHOW",
                  rows_affected=0, types=[None] * len(SHOW_COLUMNS))


def layer_rows(chain: Chain) -> list[tuple[Any, ...]]:
    rows = []
    for layer in chain.layers:
        m = layer.manifest
        descs = {e.id: decode_descriptor(e.descriptor) for e in m.descriptors}
        names = {i: d.name for i, d in descs.items() if isinstance(d, DatabaseDescriptor)}
        stats: dict[int, list[int]] = {}
        for f in m.files:
            s = stats.setdefault(_span_table(f.span.start), [0, 0])
            if decode_index_prefix(f.span.start)[1] == PRIMARY_INDEX_ID:  # rows: primary's
                s[0] += f.rows
            s[1] += f.size
        times = (format_ts(m.start_time) if m.start_time else None, format_ts(m.end_time),
                 m.backup_type)
        tables = [(i, d) for i, d in sorted(descs.items()) if isinstance(d, TableDescriptor)]
        for table_id, d in tables:
            r, size = stats.get(table_id, [0, 0])
            rows.append((names.get(d.parent_id, ""), d.name, *times, r, size,
                         m.is_full_cluster))
        # A database with no tables (or a cluster with none) still shows, with no table name,
        # so that every layer and its times are listed.
        with_tables = {d.parent_id for _, d in tables}
        empty = [name for i, name in sorted(names.items()) if i not in with_tables]
        if not tables and not empty:
            empty = [None]
        rows += [(name, None, *times, 0, 0, m.is_full_cluster) for name in empty]
    return rows

