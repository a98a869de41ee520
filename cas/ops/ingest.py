"""``cas add``: store the files under some paths, in parallel, in order.

Two worker threads hash, compress and write while the main thread walks;
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

    with store.writer() as writer, ThreadPoolExecutor(workers, "cas-add") as pool:
        def store_one(found: FoundFile) -> AddedFile | Problem:
            try:
                oid, st = writer.put_file(found.path, follow_symlinks=found.via_link)
            except SourceError as e:
                return Problem(found.path, e.why)
            return AddedFile(found.path, oid, st.st_size)

        in_flight: deque[Future] = deque()
        try:
            for item in walk(paths, skip):
                if isinstance(item, Problem):
                    # Keep output in walk order: drain what came before it.
                    while in_flight:
                        emit(in_flight.popleft().result())
                    emit(item)
                    continue
                in_flight.append(pool.submit(store_one, item))
                if len(in_flight) >= WINDOW:
                    emit(in_flight.popleft().result())
            while in_flight:
                emit(in_flight.popleft().result())
        except BaseException:
            for f in in_flight:
                f.cancel()
            raise
        writer.flush()
        report.new_objects = writer.new_objects
        report.new_bytes = writer.new_bytes
        report.stored_bytes = writer.stored_bytes
    return report
