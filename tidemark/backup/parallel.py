"""Run a job's parts on a few threads and hand their results back one at a time.

A backup part is export (SQLite), fingerprint (the C extension), compression (zstd),
hashing and upload: all C code that releases the GIL, so two parts on two threads use two
cores. The job's own bookkeeping (checkpoint, progress, pause points) stays on the calling
thread, which takes results in completion order. Leaving the ``with`` block (at the end, on
an error, or when a pause point or cancellation raises) stops handing out parts and waits
for those in flight, so nothing keeps writing after the job has returned.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from tidemark.storage.engine import Engine

__all__ = ["Parts"]

T = TypeVar("T")
R = TypeVar("R")


class Parts(Generic[T, R]):
    """``fn(i, task)`` for each ``(i, task)`` on up to ``workers`` threads."""

    def __init__(self, engine: Engine, fn: Callable[[int, T], R], tasks: list[tuple[int, T]],
                 workers: int):
        self._engine = engine
        self._fn = fn
        self._count = len(tasks)
        self._tasks: queue.SimpleQueue[tuple[int, T]] = queue.SimpleQueue()
        for t in tasks:
            self._tasks.put(t)
        self._results: queue.SimpleQueue[tuple[int, R | None, BaseException | None]] = \
            queue.SimpleQueue()
        self._stop = threading.Event()
        # One part (a small incremental) runs in the caller's thread: its store connection
        # has a warm cache, where a new thread's would start cold.
        self._threads = [] if len(tasks) <= 1 else [
            threading.Thread(target=self._work, name=f"part-worker-{n}", daemon=True)
            for n in range(min(workers, len(tasks)))]
        self._inline = tasks if not self._threads else []

    def __enter__(self) -> Parts[T, R]:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def results(self) -> Iterator[tuple[int, R]]:
        """Each part's result as it completes; a part's exception is raised here."""
        for i, task in self._inline:
            yield i, self._fn(i, task)
        for _ in range(self._count - len(self._inline)):
            i, result, error = self._results.get()
            if error is not None:
                raise error
            yield i, result  # type: ignore[misc]

    def settle(self) -> list[tuple[int, R]]:
        """Stop handing out parts, wait for those in flight, and return every result not yet
        taken (a part that failed is left out: it was not done)."""
        self.__exit__()
        out = []
        while True:
            try:
                i, result, error = self._results.get_nowait()
            except queue.Empty:
                return out
            if error is None:
                out.append((i, result))  # type: ignore[arg-type]

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    i, task = self._tasks.get_nowait()
                except queue.Empty:
                    return
                try:
                    self._results.put((i, self._fn(i, task), None))
                except BaseException as e:  # handed to the caller, who decides
                    self._results.put((i, None, e))
                    return
        finally:
            self._engine.release_thread()  # each worker's store connection
