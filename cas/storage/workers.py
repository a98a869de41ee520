"""Threads: a shared pool for block-level work, and batches of files.

Large objects are cut into blocks that are compressed and decompressed on
all cores, so a single large file keeps both busy. zstd releases the GIL, so
threads suffice. ``FileBatches`` spreads whole files over threads for the
commands that store many of them (add, snapshot).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Threads that read, hash and write files in parallel (snapshot, restore,
# verify): two keep both cores of a small machine busy; more only queue on
# the GIL between their system calls. The one place this is set.
FILE_WORKERS = min(2, os.cpu_count() or 1)

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_local = threading.local()


def _mark_pool_thread() -> None:
    _local.in_pool = True


def block_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max(2, os.cpu_count() or 1), "cas-block",
                                       initializer=_mark_pool_thread)
        return _pool


def ordered_map(fn: Callable[[T], R], items: Iterable[T], ahead: int = 4) -> Iterator[R]:
    """``map(fn, items)`` on the block pool, in order, at most ``ahead`` in flight.

    The bound keeps memory flat: a 100 GB file never has more than
    ``ahead`` blocks in memory. Called from a pool thread (a chunk being
    compressed inside a file being chunked), it runs inline: waiting on the
    pool from inside it could leave every thread waiting.
    """
    if getattr(_local, "in_pool", False):
        yield from map(fn, items)
        return
    pool = block_pool()
    pending: deque = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        # No task may outlive the map: after an error the caller cleans up
        # (a writer aborts), and a task still running would write after it.
        running = [f for f in pending if not f.cancel()]
        if running:
            wait(running)


class _Batch:
    __slots__ = ("bytes", "future", "items")

    def __init__(self) -> None:
        self.items: list = []
        self.bytes = 0
        self.future: Future | None = None


class FileBatches:
    """Hands files to worker threads, many small ones to a task.

    A task per small file cost more in hand-offs (a future and two thread
    wake-ups) than most small files take to store. Each large file is a task
    of its own, on a thread of its own: its chunks are hashed and compressed
    outside the GIL on the block pool, so it overlaps the small files'
    mostly-Python work instead of queueing behind thousands of them.

    ``fn(item)`` does one file. An exception of a type in ``catch`` is that
    file's result, raised again by ``result``; any other fails its batch.
    ``add`` returns a ticket for ``result``, which waits for that file. Used
    as a context manager; an error inside it cancels the batches not started.
    """

    def __init__(self, fn: Callable, large_min: int, name: str,
                 catch: tuple[type[BaseException], ...] = (),
                 files: int = 64, nbytes: int = 4 << 20):
        self._fn, self._catch = fn, catch
        self._large_min, self._files, self._nbytes = large_min, files, nbytes
        self._pool = ThreadPoolExecutor(FILE_WORKERS, name)
        self._large_pool = ThreadPoolExecutor(1, name + "-large")
        self._filling = _Batch()

    def __enter__(self) -> FileBatches:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # A failed or interrupted run must not go on to do every file queued.
        for pool in (self._pool, self._large_pool):
            pool.shutdown(cancel_futures=exc_type is not None)

    def add(self, item, size: int) -> tuple[_Batch, int]:
        if size >= self._large_min:
            batch = _Batch()
            batch.items.append(item)
            self._submit(batch, self._large_pool)
            return batch, 0
        batch = self._filling
        batch.items.append(item)
        batch.bytes += size
        if len(batch.items) >= self._files or batch.bytes >= self._nbytes:
            self.flush()
        return batch, len(batch.items) - 1

    def flush(self) -> None:
        """Start the batch still being filled."""
        if self._filling.items:
            self._submit(self._filling, self._pool)
            self._filling = _Batch()

    def result(self, ticket: tuple[_Batch, int]):
        batch, slot = ticket
        if batch.future is None:
            self.flush()
        assert batch.future is not None   # flush submitted the batch being filled
        got = batch.future.result()[slot]
        if isinstance(got, self._catch):
            raise got
        return got

    def _submit(self, batch: _Batch, pool: ThreadPoolExecutor) -> None:
        batch.future = pool.submit(self._run, batch.items)

    def _run(self, items: list) -> list:
        results = []
        for item in items:
            try:
                results.append(self._fn(item))
            except self._catch as e:
                results.append(e)
        return results
