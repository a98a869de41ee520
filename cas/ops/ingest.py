"""``cas add``: store the files under some paths, in parallel, in order.

Worker threads hash, compress and write while the main thread walks;
results come back in walk order so output is stable. At most ``WINDOW``
files are in flight, which bounds memory whatever the file count.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from ..errors import SourceError
from ..objectid import ObjectId
from ..storage.store import Store
from .walk import ERROR, FoundFile, Problem, walk

# Results are tiny once a file is stored, so the window can be wide: it
# lets small files flow past a large one that is still compressing.
WINDOW = 2048
# Small files go to the workers in batches: a task per file cost more in
# hand-offs (a future and two thread wake-ups) than most small files take.
# Large files get a thread of their own, so their chunking, which runs
# outside the GIL, overlaps the small files' Python work.
BATCH_FILES = 64
BATCH_BYTES = 4 << 20


class _Batch:
    __slots__ = ("items", "bytes", "future")

    def __init__(self) -> None:
        self.items: list[FoundFile] = []
        self.bytes = 0
        self.future: Future | None = None


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # storing it will say what is wrong


@dataclass(frozen=True, slots=True)
class AddedFile:
    path: str
    oid: ObjectId
    size: int


@dataclass
class AddReport:
    files: int = 0
    bytes: int = 0
    new_objects: int = 0
    new_bytes: int = 0
    stored_bytes: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]


def add_paths(
    store: Store,
    paths: list[str],
    on_result: Callable[[AddedFile | Problem], None] | None = None,
    workers: int | None = None,
) -> AddReport:
    report = AddReport()
    own = os.stat(store.path)
    skip = lambda st: (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)  # noqa: E731
    workers = workers or min(2, os.cpu_count() or 1)

    def emit(result: AddedFile | Problem) -> None:
        if isinstance(result, Problem):
            report.problems.append(result)
        else:
            report.files += 1
            report.bytes += result.size
        if on_result is not None:
            on_result(result)

    large_min = store.config.chunk_min_size
    with store.writer() as writer, ThreadPoolExecutor(workers, "cas-add") as pool, \
            ThreadPoolExecutor(1, "cas-add-large") as large_pool:
        def store_batch(items: list[FoundFile]) -> list[AddedFile | Problem]:
            results: list[AddedFile | Problem] = []
            for found in items:
                try:
                    oid, st = writer.put_file(found.path, follow_symlinks=found.via_link)
                except SourceError as e:
                    results.append(Problem(found.path, e.why))
                    continue
                results.append(AddedFile(found.path, oid, st.st_size))
            return results

        def submit(batch: _Batch, executor: ThreadPoolExecutor) -> None:
            batch.future = executor.submit(store_batch, batch.items)

        filling = _Batch()
        in_flight: deque[tuple[_Batch, int]] = deque()

        def emit_oldest() -> None:
            nonlocal filling
            batch, slot = in_flight.popleft()
            if batch.future is None:  # the batch still being filled
                submit(batch, pool)
                filling = _Batch()
            emit(batch.future.result()[slot])

        try:
            for item in walk(paths, skip):
                if isinstance(item, Problem):
                    # Keep output in walk order: drain what came before it.
                    while in_flight:
                        emit_oldest()
                    emit(item)
                    continue
                size = _size(item.path)
                if size >= large_min:
                    batch = _Batch()
                    batch.items.append(item)
                    submit(batch, large_pool)
                    in_flight.append((batch, 0))
                else:
                    filling.items.append(item)
                    filling.bytes += size
                    in_flight.append((filling, len(filling.items) - 1))
                    if len(filling.items) >= BATCH_FILES or filling.bytes >= BATCH_BYTES:
                        submit(filling, pool)
                        filling = _Batch()
                if len(in_flight) >= WINDOW:
                    emit_oldest()
            while in_flight:
                emit_oldest()
        except BaseException:
            # Queued batches are not read: the error ends the command.
            pool.shutdown(cancel_futures=True)
            large_pool.shutdown(cancel_futures=True)
            raise
        writer.flush()
        report.new_objects = writer.new_objects
        report.new_bytes = writer.new_bytes
        report.stored_bytes = writer.stored_bytes
    return report
