"""A shared pool of threads for block-level work (compressing, decompressing).

Large objects are cut into blocks that are compressed and decompressed on
all cores, so a single large file keeps both busy. zstd releases the GIL, so
threads suffice.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")

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
