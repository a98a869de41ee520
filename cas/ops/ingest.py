"""``cas add``: store the files under some paths, in parallel, in order.

Worker threads hash, compress and write while the main thread walks;
results come back in walk order so output is stable. At most ``WINDOW``
files are in flight, which bounds memory whatever the file count.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..errors import SourceError
from ..objectid import ObjectId
from ..storage.store import Store
from ..storage.workers import FileBatches
from .walk import ERROR, FoundFile, Problem, walk

# Results are tiny once a file is stored, so the window can be wide: it
# lets small files flow past a large one that is still compressing.
WINDOW = 2048


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
) -> AddReport:
    report = AddReport()
    own = os.stat(store.path)
    skip = lambda st: (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)  # noqa: E731

    def emit(result: AddedFile | Problem) -> None:
        if isinstance(result, Problem):
            report.problems.append(result)
        else:
            report.files += 1
            report.bytes += result.size
        if on_result is not None:
            on_result(result)

    with store.writer() as writer:
        def store_one(found: FoundFile) -> AddedFile:
            oid, st = writer.put_file(found.path, follow_symlinks=found.via_link,
                                     expect=found.identity)
            return AddedFile(found.path, oid, st.st_size)

        with FileBatches(store_one, store.config.chunk_min_size, "cas-add",
                         catch=(SourceError,)) as batches:
            _store_in_order(walk(paths, skip), batches, emit)
        writer.flush()
        report.new_objects = writer.new_objects
        report.new_bytes = writer.new_bytes
        report.stored_bytes = writer.stored_bytes
    return report


def _store_in_order(found: Iterable[FoundFile | Problem], batches: FileBatches,
                    emit: Callable[[AddedFile | Problem], None]) -> None:
    """Hand each found file to the workers and emit the results (and the
    walk's problems) in walk order, at most ``WINDOW`` files in flight."""
    in_flight: deque[tuple[FoundFile, tuple]] = deque()

    def emit_oldest() -> None:
        file, ticket = in_flight.popleft()
        try:
            emit(batches.result(ticket))
        except SourceError as e:
            emit(Problem(file.path, e.why))

    for item in found:
        if isinstance(item, Problem):
            # Keep output in walk order: drain what came before it.
            while in_flight:
                emit_oldest()
            emit(item)
            continue
        in_flight.append((item, batches.add(item, _size(item.path))))
        if len(in_flight) >= WINDOW:
            emit_oldest()
    while in_flight:
        emit_oldest()
