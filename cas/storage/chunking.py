"""Cutting large files into chunks, so a change costs only what changed.

Three ways to cut, chosen by what the file is:

* **safetensors** (a JSON header, then tensors at known offsets): the header
  is one chunk and every tensor starts a new chunk, so a fine-tune that
  rewrites the header and some tensors shares every unchanged tensor with
  its base. Tensors larger than ``MAX_CHUNK`` are cut every ``MAX_CHUNK``
  bytes from their start: a tensor's bytes never shift (an edit rewrites
  values in place; added vocabulary rows go at the end), so fixed cuts
  dedup as well as content-defined ones, without their cost.
* **SQLite** (fixed-size pages, updated in place): one chunk per page, so an
  update of scattered rows costs the pages it touched.
* **anything else**: FastCDC with a 64 KiB average, so appending to a log or
  inserting bytes shifts only the chunks around the edit.

Files below the store's ``chunk_min_size`` are cut only if they are *live*:
a SQLite database (by its header) or a log (by its name: ``.jsonl``,
``.ndjson``, ``.log``). A snapshot every few seconds stores such a file
again after every change; cut, it costs the pages or the tail that changed.
Logs that small are cut finer (``LIVE_CDC``, 16 KiB average): an append
stores again the chunk it extends, so the average is what each append costs.

Every chunk is at most ``MAX_CHUNK`` bytes.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pyfastcdc.cy import FastCDC


@dataclass(frozen=True)
class CdcParams:
    min: int
    avg: int
    max: int


# See docs/PERFORMANCE.md ("Chunk sizes") for the measurements behind these.
GENERAL_CDC = CdcParams(16 << 10, 64 << 10, 256 << 10)
# See docs/PERFORMANCE.md ("Small live files").
LIVE_CDC = CdcParams(4 << 10, 16 << 10, 64 << 10)
LOG_SUFFIXES = (".jsonl", ".ndjson", ".log")
MAX_CHUNK = 4 << 20
SQLITE_MAGIC = b"SQLite format 3\0"
SAFETENSORS_MAX_HEADER = 100 << 20


class _Region:
    """A readinto() view of [offset, offset+length) of a file descriptor."""

    def __init__(self, fd: int, offset: int, length: int):
        self._fd, self._pos, self._end = fd, offset, offset + length

    def readinto(self, buf) -> int:
        n = min(len(buf), self._end - self._pos)
        if n <= 0:
            return 0
        got = os.preadv(self._fd, [memoryview(buf)[:n]], self._pos)
        self._pos += got
        return got


def _cdc_chunks(fd: int, offset: int, length: int, params: CdcParams) -> Iterator[bytes]:
    # A fresh FastCDC per call: instances are not safe to share across threads.
    cdc = FastCDC(params.avg - params.min, min_size=params.min, max_size=params.max,
                  normalized_chunking=1)
    for chunk in cdc.cut_stream(_Region(fd, offset, length)):
        yield bytes(chunk.data)


_READ_BLOCK = 1 << 20


def _fixed_chunks(fd: int, offset: int, length: int, size: int) -> Iterator[bytes]:
    end = offset + length
    # Small pieces (SQLite pages) are sliced from megabyte reads: a pread
    # per 4 KiB page cost more than hashing and compressing the page.
    block = max(size, _READ_BLOCK // size * size)
    while offset < end:
        data = os.pread(fd, min(block, end - offset), offset)
        if not data:
            raise OSError(5, "file shrank while being read")
        offset += len(data)
        if len(data) <= size:
            yield data
        else:
            for i in range(0, len(data), size):
                yield data[i:i + size]


def read_safetensors_header(read_at: Callable[[int, int], bytes], size: int,
                            path: str = "file") -> tuple[dict, int]:
    """A safetensors file's header (a JSON object) and where its data starts;
    ``read_at(offset, n)`` reads the file. The one reader of these headers:
    cutting files into chunks and importing models both use it. Raises
    ValueError, naming ``path``, for anything else."""
    head = read_at(0, 8) if size >= 8 else b""
    if len(head) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", head)
    if n < 2 or n > SAFETENSORS_MAX_HEADER or 8 + n > size:
        raise ValueError(f"{path}: bad safetensors header length {n}")
    try:
        header = json.loads(read_at(8, n))
    except (ValueError, UnicodeDecodeError, RecursionError):  # nesting too deep is damage too
        raise ValueError(f"{path}: safetensors header is not JSON") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: safetensors header is not a JSON object")
    return header, 8 + n


def safetensors_spans(fd: int, size: int) -> list[tuple[int, int]] | None:
    """(offset, length) of the header and each tensor, or None if not safetensors."""
    try:
        header, base = read_safetensors_header(lambda offset, n: os.pread(fd, n, offset), size)
    except ValueError:
        return None
    ranges = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = info["data_offsets"]
        except (TypeError, KeyError, ValueError):
            return None
        if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start <= stop
                and base + stop <= size):
            return None
        if stop > start:
            ranges.append((base + start, base + stop))
    spans = [(0, base)]
    pos = base
    for start, stop in sorted(ranges):
        if start < pos:
            return None  # overlapping tensors: not a layout we cut by
        if start > pos:
            spans.append((pos, start - pos))
        spans.append((start, stop - start))
        pos = stop
    if pos < size:
        spans.append((pos, size - pos))
    return spans


def sqlite_page_size(fd: int, size: int) -> int | None:
    head = os.pread(fd, 100, 0)
    if len(head) < 100 or not head.startswith(SQLITE_MAGIC):
        return None
    (raw,) = struct.unpack(">H", head[16:18])
    page = 65536 if raw == 1 else raw
    if page < 512 or page & (page - 1) or size % page:
        return None
    return page


def is_live(name: str | bytes, fd: int, size: int) -> bool:
    """A file that changes a little at a time: a log by its name, or a SQLite database."""
    if isinstance(name, bytes):
        name = name.decode("utf-8", "surrogateescape")
    return name.lower().endswith(LOG_SUFFIXES) or sqlite_page_size(fd, size) is not None


def iter_chunks(fd: int, size: int, cdc: CdcParams = GENERAL_CDC) -> Iterator[bytes]:
    """The file's content as consecutive chunks, each at most MAX_CHUNK bytes;
    ``cdc`` for content that has no format of its own to cut by."""
    spans = safetensors_spans(fd, size)
    if spans is not None:
        for offset, length in spans:
            yield from _fixed_chunks(fd, offset, length, MAX_CHUNK)
        return
    page = sqlite_page_size(fd, size)
    if page is not None:
        yield from _fixed_chunks(fd, 0, size, page)
        return
    yield from _cdc_chunks(fd, 0, size, cdc)
