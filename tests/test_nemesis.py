"""The nemesis (tidemark.workload.nemesis) and the bank workload.

Default size is small (3 seeds x 12 steps, and 3 seeds x 18 steps in subprocess mode); more
with the environment:
``TIDEMARK_NEMESIS_SEEDS=1..20 TIDEMARK_NEMESIS_STEPS=40 pytest tests/test_nemesis.py``
(``TIDEMARK_NEMESIS_KILL_SEEDS`` / ``TIDEMARK_NEMESIS_KILL_STEPS`` for subprocess mode).
"""

from __future__ import annotations

import os
import sys

import pytest

import tidemark
from tidemark.workload import bank, kv, nemesis


def _seeds(var: str = "TIDEMARK_NEMESIS_SEEDS") -> list[int]:
    text = os.environ.get(var, "1..3")
    a, sep, b = text.partition("..")
    return list(range(int(a), int(b) + 1)) if sep else [int(s) for s in text.split(",")]


STEPS = int(os.environ.get("TIDEMARK_NEMESIS_STEPS", "12"))
KILL_STEPS = int(os.environ.get("TIDEMARK_NEMESIS_KILL_STEPS", "18"))


@pytest.mark.parametrize("seed", _seeds())
def test_nemesis_default_mode_never_diverges(tmp_path, seed):
    s = nemesis.run(seed, STEPS, tmp_path)
    detail = (f"seed={seed}: reproduce with tidemark nemesis --seed {seed} --steps {STEPS}\n"
              + "\n".join(s.divergences + s.rebuilt + s.unexpected + s.doctor_problems))
    assert s.backups_full >= 1 or s.chains == 0
    assert s.divergences == [], detail
    assert s.rebuilt == [], detail
    assert s.unexpected == [], detail
    assert all(v == "healthy" for v in s.doctor.values()), detail


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("seed", _seeds("TIDEMARK_NEMESIS_KILL_SEEDS"))
def test_nemesis_subprocess_kills_never_diverge(tmp_path, monkeypatch, seed):
    """Job statements run by a child that is SIGKILLed mid-job; the jobs are adopted (or
    cancelled) and everything restores exactly. ``force_kill`` guarantees one kill."""
    monkeypatch.chdir(tmp_path)  # the child finds tidemark whatever the working directory
    s = nemesis.run(seed, KILL_STEPS, tmp_path / "w", force_kill=True)
    detail = (f"seed={seed}: reproduce with tidemark nemesis --seed {seed} --steps "
              f"{KILL_STEPS} --force-kill\n"
              + "\n".join(s.divergences + s.rebuilt + s.unexpected + s.doctor_problems
                          + s.jobs_left))
    assert s.subprocess_kills
    assert s.killed >= 1 and s.ops["kill:backup"] >= 1, s.to_json()
    assert s.adopted >= 1, s.to_json()  # the forced kill's backup was finished here
    assert s.adopted + s.kill_cancelled + s.kill_left <= s.killed, s.to_json()
    assert s.restores_verified >= 2 * s.backups_full
    assert s.divergences == [], detail
    assert s.rebuilt == [], detail
    assert s.unexpected == [], detail
    assert s.jobs_left == [], detail
    assert s.doctor and all(v == "healthy" for v in s.doctor.values()), detail
    assert s.ok
    # Independently of the summary: every job on the store ended, none failed but those the
    # schedule expects (a CREATE UNIQUE INDEX on duplicates, an incremental GC overtook).
    with tidemark.connect(tmp_path / "w" / f"nemesis-seed-{seed}") as conn:
        conn.registry.stop_adopting()
        res = conn.execute("SHOW JOBS")
        jobs = [dict(zip(res.columns, r, strict=True)) for r in res.rows]
    assert jobs
    assert {j["status"] for j in jobs} <= {"succeeded", "canceled", "failed"}, jobs
    for j in jobs:
        if j["status"] == "failed":
            assert "duplicate" in j["error"] or "GC" in j["error"], j


def test_nemesis_unsafe_mode_is_caught(tmp_path, monkeypatch):
    monkeypatch.delenv("TIDEMARK_TESTING", raising=False)
    s = nemesis.run(3, 6, tmp_path, unsafe=True, force_hazards=True)
    assert os.environ.get("TIDEMARK_TESTING") is None  # run() restored the environment
    assert s.backups_during_paused >= 1
    # the paused IMPORT across the full backup loses rows in the MVCC-window incremental
    assert s.diverged_restores >= 1, s.to_json()
    assert "problems" in s.doctor.values(), s.to_json()
    assert s.detected and not s.ok


def test_bank_workload_keeps_its_invariant(tmp_path):
    store = tmp_path / "s"
    assert bank.init(store, rows=20) == 20 * bank.INITIAL_BALANCE
    stats = bank.run(store, duration=1.0, concurrency=2, seed=7)
    assert stats.ops > 0
    with bank.tidemark.connect(store) as conn:
        assert bank.total(conn) == (20, 20 * bank.INITIAL_BALANCE)


def test_kv_workload_runs(tmp_path):
    store = tmp_path / "s"
    kv.init(store, rows=50)
    assert kv.run(store, duration=0.5, seed=1).ops > 0


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_nemesis_unsafe_mode_with_subprocess_kills_is_caught(tmp_path, monkeypatch):
    """--unsafe combines with --subprocess: the child's backups read the cluster setting."""
    monkeypatch.delenv("TIDEMARK_TESTING", raising=False)
    s = nemesis.run(3, 6, tmp_path, unsafe=True, force_hazards=True, force_kill=True)
    assert s.killed >= 1 and s.unsafe
    assert s.diverged_restores >= 1, s.to_json()
    assert "problems" in s.doctor.values(), s.to_json()
    assert s.jobs_left == [], s.jobs_left
