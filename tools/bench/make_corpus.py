#!/usr/bin/env python3
"""Generate a seeded benchmark corpus shaped like a local AI assistant's data dir.

Usage::

    python3 tools/bench/make_corpus.py --out DIR [--scale 1.0] [--seed 7]
    python3 tools/bench/make_corpus.py --mutate DIR [--seed 7]

Layout at ``--scale 1.0`` (about 2 GB in total)::

    db/         3 SQLite databases, ~70 MB (messages, memory with float32
                embedding BLOBs, settings, documents/chunks, metrics)
    events/     JSONL event logs, ~120 MB; events/main.jsonl is ~100 MB
    models/     ~1.7 GB of bf16 safetensors: tiny-llama (2 shards, ~615 MB
                each) and mini-coder (one ~495 MB file), with config.json,
                tokenizer.json (identical in both models), etc.
    src/        ~13,500 small real files copied from the Python standard
                library and a few large installed packages

``--scale`` multiplies the sizes of db/, events/ and models/ (model widths
and vocabulary scale by sqrt(scale), so tensor names and layer counts stay
the same); src/ keeps its file count unless ``--src-files`` is given.

Determinism: every byte of db/, events/ and models/ is a function of
``--seed`` and ``--scale`` (text and SQLite content from ``random.Random``,
tensor data from numpy's PCG64, each component with its own derived seed).
src/ depends on the installed Python, but the selection is a sorted walk.

``--mutate DIR`` applies a deterministic "one day later" change set for
incremental-backup benchmarks: appends ~2 MB (scaled) to events/main.jsonl,
rewrites ~1% of the rows of every table in the largest SQLite database,
writes models/mini-coder-ft/ (a fine-tuned copy of mini-coder in which ~10%
of the tensors are perturbed and the rest are byte-identical, under a new
header) and edits ~50 small .py files under src/.

Memory stays bounded (tensors are generated in 4M-element blocks; peak RSS is
well under 300 MB). Depends only on the stdlib and numpy.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import math
import os
import random
import shutil
import sqlite3
import struct
import sys
import sysconfig
import time
from array import array
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

MB = 1_000_000
GROUPS = ("db", "events", "models", "src")

DB_TARGETS_MB = {"assistant.db": 50.0, "knowledge.db": 14.0, "telemetry.db": 6.0}
EVENT_TARGETS_MB = {
    "main.jsonl": 100.0,
    "tools.jsonl": 12.0,
    "errors.jsonl": 3.0,
    "archive/2023-12.jsonl": 5.0,
}
SRC_FILES_DEFAULT = 13_500
SRC_MAX_FILE_BYTES = 1 << 20  # "small files": skip anything above 1 MiB
SRC_PREFERRED_PACKAGES = (
    "numpy", "pip", "setuptools", "scipy", "sympy", "networkx", "pygments",
    "docutils", "botocore", "jedi", "awscli",
)
STDLIB_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages"}

TENSOR_BLOCK = 4 * 1024 * 1024  # elements generated per numpy call
WEIGHT_STD = 0.02
EPOCH_START = 1_701_388_800  # 2023-12-01T00:00:00Z
MUTATE_APPEND_MB = 2.0
MUTATE_ROW_FRACTION = 0.01
MUTATE_TENSOR_FRACTION = 0.10
MUTATE_SMALL_FILES = 50
FINE_TUNE_SOURCE = "mini-coder"


# --------------------------------------------------------------------------
# seeds and text


def sub_seed(seed: int, *labels: object) -> int:
    """A 64-bit seed derived from the master seed and a component label."""
    key = ":".join([str(seed), *map(str, labels)]).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


def rng(seed: int, *labels: object) -> random.Random:
    return random.Random(sub_seed(seed, *labels))


_CONSONANTS = "b c d f g h k l m n p r s t v w z ch sh th st tr pl qu".split()
_VOWELS = "a e i o u ai ea ou io y".split()
SYLLABLES = [c + v for c in _CONSONANTS for v in _VOWELS] + _VOWELS


class Vocabulary:
    """Seeded pseudo-words with a Zipf-like frequency distribution.

    Text drawn from it compresses roughly like natural-language logs (zstd
    ~3-4x on the generated JSONL), not like repeated boilerplate.
    """

    def __init__(self, rnd: random.Random, size: int = 8000, zipf: float = 1.05):
        words: set[str] = set()
        while len(words) < size:
            n = rnd.choice((1, 2, 2, 2, 3, 3, 3, 4))
            words.add("".join(rnd.choice(SYLLABLES) for _ in range(n)))
        self.words = sorted(words)
        rnd.shuffle(self.words)  # rank order
        self.cum_weights = list(itertools.accumulate(
            1.0 / (rank ** zipf) for rank in range(1, size + 1)))

    def sample(self, rnd: random.Random, k: int) -> list[str]:
        return rnd.choices(self.words, cum_weights=self.cum_weights, k=k)

    def text(self, rnd: random.Random, n_words: int) -> str:
        words = self.sample(rnd, max(1, n_words))
        for i in range(len(words)):
            if rnd.random() < 0.03:
                words[i] = str(rnd.randint(0, 99_999))
        sentences = []
        i = 0
        while i < len(words):
            length = rnd.randint(5, 16)
            part = words[i:i + length]
            i += length
            part[0] = part[0].capitalize()
            sentences.append(" ".join(part) + rnd.choice(".....?!:"))
        return " ".join(sentences)

    def title(self, rnd: random.Random) -> str:
        return " ".join(self.sample(rnd, rnd.randint(2, 6))).capitalize()


def vocabulary(seed: int) -> Vocabulary:
    return Vocabulary(rng(seed, "vocabulary"))


def iso_ts(t: float) -> str:
    dt = datetime.fromtimestamp(t, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def hex_id(rnd: random.Random, nbytes: int = 8) -> str:
    return rnd.getrandbits(nbytes * 8).to_bytes(nbytes, "big").hex()


# --------------------------------------------------------------------------
# db/: SQLite databases


def embedding_blob(rnd: random.Random, dim: int) -> bytes:
    vec = [rnd.gauss(0.0, 1.0) for _ in range(dim)]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return array("f", (v / norm for v in vec)).tobytes()


def db_size(conn: sqlite3.Connection) -> int:
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    return conn.execute("PRAGMA page_count").fetchone()[0] * page_size


def fill_until(conn: sqlite3.Connection, target_bytes: float,
               insert_batch: Callable[[], None]) -> None:
    """Call insert_batch (and commit) until the database reaches target_bytes."""
    while db_size(conn) < target_bytes:
        insert_batch()
        conn.commit()


SETTINGS_SECTIONS = ("ui", "model", "memory", "privacy", "sync", "voice", "tools", "search")


def create_settings(conn: sqlite3.Connection, rnd: random.Random, vocab: Vocabulary,
                    n: int = 160) -> None:
    conn.execute("CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL,"
                 " updated_at INTEGER NOT NULL)")
    rows = []
    for i in range(n):
        key = f"{rnd.choice(SETTINGS_SECTIONS)}.{'_'.join(vocab.sample(rnd, 2))}.{i}"
        value = rnd.choice((
            json.dumps(rnd.random() < 0.5),
            json.dumps(rnd.randint(0, 4096)),
            json.dumps(round(rnd.random(), 3)),
            json.dumps(vocab.title(rnd)),
        ))
        rows.append((key, value, EPOCH_START + rnd.randint(0, 90 * 86400)))
    conn.executemany("INSERT INTO settings VALUES (?, ?, ?)", rows)
    conn.commit()


def make_assistant_db(path: Path, target: float, rnd: random.Random, vocab: Vocabulary) -> None:
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE conversations (id INTEGER PRIMARY KEY, title TEXT NOT NULL,
            created_at INTEGER NOT NULL, model TEXT NOT NULL, archived INTEGER NOT NULL);
        CREATE TABLE messages (id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id),
            role TEXT NOT NULL, created_at INTEGER NOT NULL, content TEXT NOT NULL,
            tokens INTEGER NOT NULL);
        CREATE INDEX messages_by_conversation ON messages(conversation_id, created_at);
        CREATE TABLE memory (id INTEGER PRIMARY KEY, created_at INTEGER NOT NULL,
            kind TEXT NOT NULL, content TEXT NOT NULL, embedding BLOB NOT NULL,
            importance REAL NOT NULL, last_access INTEGER NOT NULL);
    """)
    create_settings(conn, rnd, vocab)
    state = {"conv": 0, "t": EPOCH_START}

    def message_batch() -> None:
        rows = []
        for _ in range(rnd.randint(4, 40)):
            state["conv"] += 1
            state["t"] += rnd.randint(600, 20_000)
            conn.execute("INSERT INTO conversations VALUES (?, ?, ?, ?, ?)",
                         (state["conv"], vocab.title(rnd), state["t"],
                          rnd.choice(("tiny-llama", "mini-coder")), int(rnd.random() < 0.2)))
            for turn in range(rnd.randint(2, 30)):
                role = "user" if turn % 2 == 0 else "assistant"
                n = rnd.randint(4, 60) if role == "user" else rnd.randint(20, 320)
                state["t"] += rnd.randint(5, 300)
                rows.append((state["conv"], role, state["t"], vocab.text(rnd, n),
                             int(n * 1.3)))
        conn.executemany("INSERT INTO messages (conversation_id, role, created_at, content,"
                         " tokens) VALUES (?, ?, ?, ?, ?)", rows)

    def memory_batch() -> None:
        rows = []
        for _ in range(200):
            created = EPOCH_START + rnd.randint(0, 120 * 86400)
            rows.append((created, rnd.choice(("fact", "preference", "episode", "task")),
                         vocab.text(rnd, rnd.randint(6, 40)), embedding_blob(rnd, 128),
                         round(rnd.random(), 4), created + rnd.randint(0, 30 * 86400)))
        conn.executemany("INSERT INTO memory (created_at, kind, content, embedding,"
                         " importance, last_access) VALUES (?, ?, ?, ?, ?, ?)", rows)

    fill_until(conn, 0.72 * target, message_batch)
    fill_until(conn, target, memory_batch)
    conn.close()


def make_knowledge_db(path: Path, target: float, rnd: random.Random, vocab: Vocabulary) -> None:
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE documents (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE,
            title TEXT NOT NULL, mime TEXT NOT NULL, bytes INTEGER NOT NULL,
            sha256 TEXT NOT NULL, added_at INTEGER NOT NULL);
        CREATE TABLE chunks (id INTEGER PRIMARY KEY,
            document_id INTEGER NOT NULL REFERENCES documents(id), ord INTEGER NOT NULL,
            text TEXT NOT NULL, embedding BLOB NOT NULL);
        CREATE INDEX chunks_by_document ON chunks(document_id, ord);
    """)
    create_settings(conn, rnd, vocab, n=40)
    doc_id = 0

    def batch() -> None:
        nonlocal doc_id
        for _ in range(20):
            doc_id += 1
            ext = rnd.choice(("md", "pdf", "txt", "html", "docx"))
            name = "_".join(vocab.sample(rnd, 3))
            conn.execute("INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?)", (
                doc_id, f"~/Documents/{'/'.join(vocab.sample(rnd, 2))}/{name}-{doc_id}.{ext}",
                vocab.title(rnd), f"application/{ext}", rnd.randint(500, 5_000_000),
                hex_id(rnd, 32), EPOCH_START + rnd.randint(0, 120 * 86400)))
            conn.executemany("INSERT INTO chunks (document_id, ord, text, embedding)"
                             " VALUES (?, ?, ?, ?)",
                             [(doc_id, i, vocab.text(rnd, rnd.randint(60, 160)),
                               embedding_blob(rnd, 64)) for i in range(rnd.randint(1, 12))])

    fill_until(conn, target, batch)
    conn.close()


def make_telemetry_db(path: Path, target: float, rnd: random.Random, vocab: Vocabulary) -> None:
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE metrics (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL,
            name TEXT NOT NULL, value REAL NOT NULL, tags TEXT NOT NULL);
        CREATE INDEX metrics_by_name ON metrics(name, ts);
    """)
    create_settings(conn, rnd, vocab, n=20)
    names = [f"{a}.{b}" for a in ("llm", "ui", "db", "sync", "tool")
             for b in ("latency_ms", "tokens", "errors", "bytes", "queue_depth")]
    t = EPOCH_START

    def batch() -> None:
        nonlocal t
        rows = []
        for _ in range(2000):
            t += rnd.randint(1, 120)
            rows.append((t, rnd.choice(names), round(rnd.lognormvariate(3, 1.2), 3),
                         json.dumps({"host": "local", "v": f"0.{rnd.randint(1, 9)}"})))
        conn.executemany("INSERT INTO metrics (ts, name, value, tags) VALUES (?, ?, ?, ?)",
                         rows)

    fill_until(conn, target, batch)
    conn.close()


DB_BUILDERS = {
    "assistant.db": make_assistant_db,
    "knowledge.db": make_knowledge_db,
    "telemetry.db": make_telemetry_db,
}


def write_databases(out: Path, scale: float, seed: int, vocab: Vocabulary) -> None:
    (out / "db").mkdir(parents=True, exist_ok=True)
    for name, builder in DB_BUILDERS.items():
        target = max(64 * 1024, DB_TARGETS_MB[name] * MB * scale)
        builder(out / "db" / name, target, rng(seed, "db", name), vocab)


# --------------------------------------------------------------------------
# events/: JSONL logs


TOOLS = ("web_search", "read_file", "calendar", "calculator", "python", "shell", "email")
UI_ACTIONS = ("click", "scroll", "open_panel", "close_panel", "copy", "paste", "shortcut")


@dataclass
class EventStream:
    """Stateful generator of JSON event lines (timestamps only go forward)."""

    rnd: random.Random
    vocab: Vocabulary
    t: float = float(EPOCH_START)
    seq: int = 0
    session: str = ""
    conv: int = 0

    def payload(self, kind: str) -> dict:
        rnd, vocab = self.rnd, self.vocab
        if kind == "message.user":
            return {"conv": self.conv, "text": vocab.text(rnd, rnd.randint(4, 60))}
        if kind == "message.assistant":
            n = rnd.randint(20, 300)
            return {"conv": self.conv, "model": rnd.choice(("tiny-llama", "mini-coder")),
                    "text": vocab.text(rnd, n), "tokens": int(n * 1.3),
                    "latency_ms": rnd.randint(80, 9000)}
        if kind == "tool.call":
            return {"tool": rnd.choice(TOOLS), "call_id": hex_id(rnd),
                    "args": {"query": vocab.text(rnd, rnd.randint(3, 12))}}
        if kind == "tool.result":
            return {"call_id": hex_id(rnd), "ok": rnd.random() < 0.95,
                    "bytes": rnd.randint(10, 200_000),
                    "summary": vocab.text(rnd, rnd.randint(10, 80))}
        if kind == "memory.write":
            return {"memory_id": rnd.randint(1, 10**6), "importance": round(rnd.random(), 3),
                    "text": vocab.text(rnd, rnd.randint(8, 40))}
        if kind == "ui.action":
            return {"action": rnd.choice(UI_ACTIONS),
                    "target": "_".join(vocab.sample(rnd, 2)), "x": rnd.randint(0, 1920),
                    "y": rnd.randint(0, 1080)}
        if kind == "model.load":
            return {"model": rnd.choice(("tiny-llama", "mini-coder")),
                    "ms": rnd.randint(300, 20_000), "device": "cpu", "threads": 2}
        if kind == "error":
            return {"code": rnd.choice(("E_TIMEOUT", "E_IO", "E_TOOL", "E_PARSE", "E_OOM")),
                    "message": vocab.text(rnd, rnd.randint(5, 20)),
                    "trace": [f"{'_'.join(vocab.sample(rnd, 2))}.py:{rnd.randint(1, 900)}"
                              for _ in range(rnd.randint(1, 8))]}
        raise ValueError(kind)

    def line(self, kinds: tuple[str, ...], weights: tuple[float, ...]) -> str:
        rnd = self.rnd
        self.t += rnd.expovariate(1 / 20.0)
        self.seq += 1
        if not self.session or rnd.random() < 0.002:
            self.session = hex_id(rnd, 4)
        if rnd.random() < 0.05:
            self.conv += 1
        kind = rnd.choices(kinds, weights=weights)[0]
        event = {"ts": iso_ts(self.t), "seq": self.seq, "type": kind,
                 "session": self.session, "payload": self.payload(kind)}
        return json.dumps(event, separators=(",", ":")) + "\n"


EVENT_MIXES: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "main.jsonl": (("message.user", "message.assistant", "tool.call", "tool.result",
                    "memory.write", "ui.action", "model.load", "error"),
                   (24, 24, 8, 8, 6, 26, 1, 3)),
    "tools.jsonl": (("tool.call", "tool.result"), (1, 1)),
    "errors.jsonl": (("error",), (1,)),
    "archive/2023-12.jsonl": (("message.user", "message.assistant", "ui.action"), (3, 3, 4)),
}


def write_event_lines(f, stream: EventStream, name: str, nbytes: float) -> int:
    kinds, weights = EVENT_MIXES[name]
    written = 0
    buf: list[str] = []
    while written < nbytes:
        line = stream.line(kinds, weights)
        buf.append(line)
        written += len(line.encode())
        if len(buf) >= 512:
            f.write("".join(buf))
            buf.clear()
    f.write("".join(buf))
    return written


def write_events(out: Path, scale: float, seed: int, vocab: Vocabulary) -> None:
    for name, target_mb in EVENT_TARGETS_MB.items():
        path = out / "events" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        stream = EventStream(rng(seed, "events", name), vocab)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            write_event_lines(f, stream, name, max(16 * 1024, target_mb * MB * scale))


# --------------------------------------------------------------------------
# models/: bf16 safetensors


@dataclass(frozen=True)
class ModelSpec:
    """A Llama-style decoder; shapes follow the Hugging Face naming."""

    name: str
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    kv_groups: int
    tied_embeddings: bool
    shards: int
    head_dim: int = 64

    def scaled(self, scale: float) -> "ModelSpec":
        if scale == 1.0:
            return self
        f = math.sqrt(scale)

        def rnd_to(x: float, m: int) -> int:
            return max(m, int(round(x / m)) * m)

        return dataclasses.replace(self, vocab=rnd_to(self.vocab * f, 128),
                                   hidden=rnd_to(self.hidden * f, 64),
                                   intermediate=rnd_to(self.intermediate * f, 64))

    @property
    def heads(self) -> int:
        return max(1, self.hidden // self.head_dim)

    @property
    def kv_heads(self) -> int:
        want = max(1, self.heads // self.kv_groups)
        return max(d for d in range(1, want + 1) if self.heads % d == 0)


MODELS = (
    ModelSpec("tiny-llama", vocab=32000, hidden=2048, intermediate=5632, layers=11,
              kv_groups=8, tied_embeddings=False, shards=2),
    ModelSpec("mini-coder", vocab=32000, hidden=1536, intermediate=4096, layers=8,
              kv_groups=4, tied_embeddings=True, shards=1),
)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    kind: str  # "weight" (N(0, 0.02)) or "norm" (1 + N(0, 0.02))

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return 2 * self.numel


def model_tensors(spec: ModelSpec) -> list[TensorSpec]:
    """Tensors in module order (the order Hugging Face shards them in)."""
    h, i, kv = spec.hidden, spec.intermediate, spec.kv_heads * spec.head_dim
    out = [TensorSpec("model.embed_tokens.weight", (spec.vocab, h), "weight")]
    for n in range(spec.layers):
        p = f"model.layers.{n}."
        out += [
            TensorSpec(p + "self_attn.q_proj.weight", (h, h), "weight"),
            TensorSpec(p + "self_attn.k_proj.weight", (kv, h), "weight"),
            TensorSpec(p + "self_attn.v_proj.weight", (kv, h), "weight"),
            TensorSpec(p + "self_attn.o_proj.weight", (h, h), "weight"),
            TensorSpec(p + "mlp.gate_proj.weight", (i, h), "weight"),
            TensorSpec(p + "mlp.up_proj.weight", (i, h), "weight"),
            TensorSpec(p + "mlp.down_proj.weight", (h, i), "weight"),
            TensorSpec(p + "input_layernorm.weight", (h,), "norm"),
            TensorSpec(p + "post_attention_layernorm.weight", (h,), "norm"),
        ]
    out.append(TensorSpec("model.norm.weight", (h,), "norm"))
    if not spec.tied_embeddings:
        out.append(TensorSpec("lm_head.weight", (spec.vocab, h), "weight"))
    return out


def split_shards(tensors: list[TensorSpec], shards: int) -> list[list[TensorSpec]]:
    """Greedy split in module order into `shards` parts of about equal bytes."""
    total = sum(t.nbytes for t in tensors)
    parts: list[list[TensorSpec]] = [[]]
    done = 0
    for t in tensors:
        boundary = total * len(parts) / shards
        if parts[-1] and len(parts) < shards and done + t.nbytes / 2 > boundary:
            parts.append([])
        parts[-1].append(t)
        done += t.nbytes
    return parts


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 bits (round-to-nearest-even), as uint16."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    bias = (u >> np.uint32(16)) & np.uint32(1)
    bias += np.uint32(0x7FFF)
    bias += u  # wraps only for NaN payloads, which normal samples never hit
    return (bias >> np.uint32(16)).astype("<u2")


def bf16_to_f32(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << np.uint32(16)).view(np.float32)


def tensor_blocks(seed: int, model: str, t: TensorSpec) -> Iterator[bytes]:
    """bf16 bytes of one tensor, in blocks of TENSOR_BLOCK elements."""
    gen = np.random.Generator(np.random.PCG64(sub_seed(seed, "tensor", model, t.name)))
    left = t.numel
    while left:
        n = min(left, TENSOR_BLOCK)
        x = gen.standard_normal(n, dtype=np.float32)
        x *= np.float32(WEIGHT_STD)
        if t.kind == "norm":
            x += np.float32(1.0)
        yield f32_to_bf16(x).tobytes()
        left -= n


def safetensors_header(entries: list[tuple[str, tuple[int, ...], int]],
                       metadata: dict[str, str]) -> bytes:
    """Header bytes (length prefix + space-padded JSON) for bf16 tensors, laid
    out in the given order."""
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name, shape, nbytes in entries:
        header[name] = {"dtype": "BF16", "shape": list(shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(len(raw) + 8) % 8)
    return struct.pack("<Q", len(raw)) + raw


def write_safetensors(path: Path, tensors: list[TensorSpec], metadata: dict[str, str],
                      blocks: Callable[[TensorSpec], Iterator[bytes]]) -> int:
    ordered = sorted(tensors, key=lambda t: t.name)  # what safetensors.save_file does
    header = safetensors_header([(t.name, t.shape, t.nbytes) for t in ordered], metadata)
    with open(path, "wb") as f:
        f.write(header)
        for t in ordered:
            written = 0
            for chunk in blocks(t):
                f.write(chunk)
                written += len(chunk)
            assert written == t.nbytes, (t.name, written, t.nbytes)
    return path.stat().st_size


def model_config(spec: ModelSpec) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "_name_or_path": f"bench/{spec.name}",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": spec.hidden,
        "intermediate_size": spec.intermediate,
        "initializer_range": WEIGHT_STD,
        "max_position_embeddings": 4096,
        "num_attention_heads": spec.heads,
        "num_hidden_layers": spec.layers,
        "num_key_value_heads": spec.kv_heads,
        "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0,
        "tie_word_embeddings": spec.tied_embeddings,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.40.0",
        "use_cache": True,
        "vocab_size": spec.vocab,
    }


def tokenizer_json(seed: int, vocab_size: int) -> str:
    """A BPE tokenizer.json; depends only on (seed, vocab_size), so models that
    share a vocabulary share a byte-identical file, as in real model families."""
    rnd = rng(seed, "tokenizer", vocab_size)
    specials = ["<unk>", "<s>", "</s>"]
    tokens = specials + [f"<0x{b:02X}>" for b in range(256)]
    seen = set(tokens)
    while len(tokens) < vocab_size:
        piece = "".join(rnd.choice(SYLLABLES) for _ in range(rnd.choice((1, 1, 2, 2, 3))))
        if rnd.random() < 0.6:
            piece = "\u2581" + piece
        if piece not in seen:
            seen.add(piece)
            tokens.append(piece)
    tokens = tokens[:vocab_size]
    merges = []
    for tok in tokens[len(specials) + 256:]:
        if len(tok) >= 2:
            cut = rnd.randint(1, len(tok) - 1)
            merges.append(f"{tok[:cut]} {tok[cut:]}")
    doc = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": s, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
                         for i, s in enumerate(specials)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True,
                  "vocab": {tok: i for i, tok in enumerate(tokens)}, "merges": merges},
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def write_model_files(d: Path, spec: ModelSpec, seed: int) -> None:
    write_json(d / "config.json", model_config(spec))
    write_json(d / "generation_config.json",
               {"bos_token_id": 1, "eos_token_id": 2, "max_length": 4096,
                "temperature": 0.7, "top_p": 0.9, "transformers_version": "4.40.0"})
    write_json(d / "tokenizer_config.json",
               {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
                "eos_token": "</s>", "unk_token": "<unk>", "model_max_length": 4096,
                "tokenizer_class": "LlamaTokenizer", "clean_up_tokenization_spaces": False})
    (d / "tokenizer.json").write_text(tokenizer_json(seed, spec.vocab), encoding="utf-8")


def write_model(out: Path, spec: ModelSpec, seed: int) -> None:
    d = out / "models" / spec.name
    d.mkdir(parents=True, exist_ok=True)
    write_model_files(d, spec, seed)
    shards = split_shards(model_tensors(spec), spec.shards)
    blocks = lambda t: tensor_blocks(seed, spec.name, t)  # noqa: E731
    metadata = {"format": "pt"}
    if len(shards) == 1:
        write_safetensors(d / "model.safetensors", shards[0], metadata, blocks)
        return
    weight_map = {}
    for k, part in enumerate(shards, 1):
        fname = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(d / fname, part, metadata, blocks)
        weight_map.update({t.name: fname for t in part})
    total = sum(t.nbytes for part in shards for t in part)
    write_json(d / "model.safetensors.index.json",
               {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})


def write_models(out: Path, scale: float, seed: int) -> None:
    for spec in MODELS:
        write_model(out, spec.scaled(scale), seed)


# --------------------------------------------------------------------------
# src/: small real files


def walk_files(root: Path, skip_dirs: set[str]) -> Iterator[Path]:
    """Regular files under root in sorted (deterministic) order, no symlinks."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if d not in skip_dirs and not os.path.islink(os.path.join(dirpath, d)))
        for name in sorted(filenames):
            p = Path(dirpath, name)
            if p.is_symlink() or not p.is_file() or name.endswith((".pyc", ".pyo")):
                continue
            try:
                if p.stat().st_size <= SRC_MAX_FILE_BYTES and os.access(p, os.R_OK):
                    yield p
            except OSError:
                continue


def src_candidates() -> Iterator[tuple[Path, Path]]:
    """(source file, destination relative to src/) in selection order: the
    stdlib first, then the preferred site-packages, then the others by name."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for p in walk_files(stdlib, STDLIB_SKIP_DIRS | {"__pycache__"}):
        yield p, Path("stdlib") / p.relative_to(stdlib)
    site = Path(sysconfig.get_paths()["purelib"])
    if not site.is_dir():
        return
    others = sorted(d.name for d in site.iterdir()
                    if d.is_dir() and not d.is_symlink() and d.name not in SRC_PREFERRED_PACKAGES)
    for pkg in [*SRC_PREFERRED_PACKAGES, *others]:
        root = site / pkg
        if root.is_dir():
            for p in walk_files(root, {"__pycache__"}):
                yield p, Path("site-packages") / p.relative_to(site)


def copy_src(out: Path, n_files: int) -> int:
    copied = 0
    for src, rel in src_candidates():
        if copied >= n_files:
            break
        dest = out / "src" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(src, dest)
        except OSError:
            continue
        copied += 1
    if copied < n_files:
        print(f"warning: only {copied} source files available (wanted {n_files})",
              file=sys.stderr)
    return copied


# --------------------------------------------------------------------------
# --mutate


def last_event(path: Path) -> dict:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 256 * 1024))
        tail = f.read().rstrip(b"\n")
    return json.loads(tail.rsplit(b"\n", 1)[-1])


def mutate_events(corpus: Path, seed: int, scale: float, vocab: Vocabulary) -> str:
    path = corpus / "events" / "main.jsonl"
    last = last_event(path)
    t = datetime.strptime(last["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    stream = EventStream(rng(seed, "mutate", "events"), vocab, t=t.timestamp(),
                         seq=last["seq"], session=last["session"])
    with open(path, "a", encoding="utf-8", newline="\n") as f:
        n = write_event_lines(f, stream, "main.jsonl", max(4096, MUTATE_APPEND_MB * MB * scale))
    return f"events/main.jsonl: appended {n:,} bytes"


def mutate_database(corpus: Path, seed: int, vocab: Vocabulary) -> str:
    dbs = sorted((corpus / "db").glob("*.db"), key=lambda p: (-p.stat().st_size, p.name))
    path = dbs[0]
    rnd = rng(seed, "mutate", "db", path.name)
    conn = sqlite3.connect(path)
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    changed = {}
    for table in tables:
        cols = conn.execute(f"SELECT name, type FROM pragma_table_info('{table}')").fetchall()
        rowids = [r[0] for r in conn.execute(f"SELECT rowid FROM {table} ORDER BY rowid")]
        if not rowids:
            continue
        pick = sorted(rnd.sample(rowids, max(1, round(len(rowids) * MUTATE_ROW_FRACTION))))
        for rowid in pick:
            row = conn.execute(f"SELECT * FROM {table} WHERE rowid=?", (rowid,)).fetchone()
            updates = {}
            for (col, ctype), value in zip(cols, row):
                if isinstance(value, str) and col in ("content", "text", "title"):
                    updates[col] = vocab.text(rnd, max(3, len(value.split()) + rnd.randint(-5, 20)))
                elif isinstance(value, bytes):
                    updates[col] = embedding_blob(rnd, len(value) // 4)
                elif col in ("value",) and isinstance(value, str):
                    updates[col] = json.dumps(rnd.randint(0, 4096))
                elif col in ("updated_at", "last_access", "importance", "archived"):
                    updates[col] = (round(rnd.random(), 4) if col == "importance"
                                    else int(rnd.random() < 0.5) if col == "archived"
                                    else value + rnd.randint(60, 86400))
            if updates:
                assigns = ", ".join(f"{c}=?" for c in updates)
                conn.execute(f"UPDATE {table} SET {assigns} WHERE rowid=?",
                             (*updates.values(), rowid))
        changed[table] = len(pick)
        conn.commit()
    conn.close()
    detail = ", ".join(f"{t} {n}" for t, n in changed.items())
    return f"db/{path.name}: rows updated: {detail}"


def read_safetensors_header(path: Path) -> tuple[int, dict]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return 8 + n, json.loads(f.read(n))


def mutate_model(corpus: Path, seed: int) -> str:
    src_dir = corpus / "models" / FINE_TUNE_SOURCE
    dst_dir = corpus / "models" / f"{FINE_TUNE_SOURCE}-ft"
    dst_dir.mkdir()
    for f in sorted(src_dir.iterdir()):
        if f.suffix != ".safetensors" and f.name != "config.json":
            shutil.copyfile(f, dst_dir / f.name)
    config = json.loads((src_dir / "config.json").read_text())
    config["_name_or_path"] = f"bench/{FINE_TUNE_SOURCE}-ft"
    write_json(dst_dir / "config.json", config)

    rnd = rng(seed, "mutate", "model")
    summary = []
    for path in sorted(src_dir.glob("*.safetensors")):
        data_start, header = read_safetensors_header(path)
        meta = header.pop("__metadata__", {})
        names = sorted(header, key=lambda n: header[n]["data_offsets"][0])
        # a merged LoRA on attention q/v projections, like a typical fine-tune
        candidates = [n for n in names if n.endswith(("q_proj.weight", "v_proj.weight"))] or names
        k = max(1, round(len(names) * MUTATE_TENSOR_FRACTION))
        perturbed = set(rnd.sample(candidates, min(k, len(candidates))))
        specs = [TensorSpec(n, tuple(header[n]["shape"]), "weight") for n in names]
        meta = {**meta, "fine_tuned_from": f"bench/{FINE_TUNE_SOURCE}",
                "perturbed_tensors": str(len(perturbed))}

        def blocks(t: TensorSpec, path: Path = path, data_start: int = data_start,
                   header: dict = header, perturbed: set = perturbed) -> Iterator[bytes]:
            start, end = header[t.name]["data_offsets"]
            gen = np.random.Generator(np.random.PCG64(sub_seed(seed, "mutate", t.name)))
            with open(path, "rb") as f:
                f.seek(data_start + start)
                left = end - start
                while left:
                    chunk = f.read(min(left, 2 * TENSOR_BLOCK))
                    left -= len(chunk)
                    if t.name in perturbed:
                        x = bf16_to_f32(np.frombuffer(chunk, dtype="<u2"))
                        x += gen.standard_normal(x.size, dtype=np.float32) * np.float32(0.002)
                        chunk = f32_to_bf16(x).tobytes()
                    yield chunk

        write_safetensors(dst_dir / path.name, specs, meta, blocks)
        summary.append(f"{path.name}: {len(perturbed)}/{len(names)} tensors perturbed")
    return f"models/{dst_dir.name}/: " + "; ".join(summary)


def mutate_small_files(corpus: Path, seed: int, vocab: Vocabulary) -> str:
    files = sorted(p for p in (corpus / "src").rglob("*.py") if p.is_file())
    rnd = rng(seed, "mutate", "src")
    picked = rnd.sample(files, min(MUTATE_SMALL_FILES, len(files)))
    for p in picked:
        lines = p.read_bytes().split(b"\n")
        at = rnd.randint(0, len(lines))
        note = f"# local edit: {' '.join(vocab.sample(rnd, 8))}".encode()
        lines.insert(at, note)
        p.write_bytes(b"\n".join(lines))
    return f"src/: edited {len(picked)} .py files"


def infer_scale(corpus: Path) -> float:
    cfg = json.loads((corpus / "models" / FINE_TUNE_SOURCE / "config.json").read_text())
    base = next(m for m in MODELS if m.name == FINE_TUNE_SOURCE)
    return (cfg["hidden_size"] / base.hidden) ** 2


def mutate(corpus: Path, seed: int) -> list[str]:
    needed = ["events/main.jsonl", f"models/{FINE_TUNE_SOURCE}/config.json", "db", "src"]
    missing = [n for n in needed if not (corpus / n).exists()]
    if missing:
        raise SystemExit(f"error: {corpus} is not a corpus made by this script "
                         f"(missing {', '.join(missing)})")
    if (corpus / "models" / f"{FINE_TUNE_SOURCE}-ft").exists():
        raise SystemExit(f"error: {corpus} was already mutated "
                         f"(models/{FINE_TUNE_SOURCE}-ft exists)")
    vocab = vocabulary(seed)
    scale = infer_scale(corpus)
    return [
        mutate_events(corpus, seed, scale, vocab),
        mutate_database(corpus, seed, vocab),
        mutate_model(corpus, seed),
        mutate_small_files(corpus, seed, vocab),
    ]


# --------------------------------------------------------------------------
# summary and CLI


def group_stats(corpus: Path) -> dict[str, tuple[int, int]]:
    stats = {}
    for group in GROUPS:
        files = nbytes = 0
        for dirpath, _, filenames in os.walk(corpus / group):
            for name in filenames:
                files += 1
                nbytes += os.lstat(os.path.join(dirpath, name)).st_size
        stats[group] = (files, nbytes)
    return stats


def print_summary(corpus: Path) -> None:
    stats = group_stats(corpus)
    print(f"\ncorpus {corpus}")
    print(f"{'group':<8} {'files':>8} {'bytes':>15} {'MB':>10}")
    for group, (files, nbytes) in stats.items():
        print(f"{group:<8} {files:>8,} {nbytes:>15,} {nbytes / MB:>10.1f}")
    files = sum(s[0] for s in stats.values())
    nbytes = sum(s[1] for s in stats.values())
    print(f"{'total':<8} {files:>8,} {nbytes:>15,} {nbytes / MB:>10.1f}")


def prepare_out(out: Path, force: bool) -> None:
    if out.exists() and any(out.iterdir()):
        present = [g for g in GROUPS if (out / g).exists()]
        if not force:
            raise SystemExit(f"error: {out} is not empty (use --force to regenerate "
                             f"{', '.join(GROUPS)} in it)")
        for g in present:
            shutil.rmtree(out / g)
    out.mkdir(parents=True, exist_ok=True)


def generate(out: Path, scale: float, seed: int, src_files: int) -> None:
    vocab = vocabulary(seed)
    steps: list[tuple[str, Callable[[], object]]] = [
        ("db", lambda: write_databases(out, scale, seed, vocab)),
        ("events", lambda: write_events(out, scale, seed, vocab)),
        ("models", lambda: write_models(out, scale, seed)),
        ("src", lambda: copy_src(out, src_files)),
    ]
    for name, step in steps:
        t0 = time.perf_counter()
        step()
        print(f"{name:<8} done in {time.perf_counter() - t0:6.1f} s", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--out", type=Path, help="directory to create the corpus in")
    mode.add_argument("--mutate", type=Path, metavar="DIR",
                      help="apply the deterministic incremental change set to a corpus")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiplier for db/, events/ and models/ sizes (default 1.0)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--src-files", type=int, default=SRC_FILES_DEFAULT,
                    help=f"number of small files under src/ (default {SRC_FILES_DEFAULT})")
    ap.add_argument("--force", action="store_true",
                    help="regenerate db/ events/ models/ src/ if --out already has them")
    args = ap.parse_args(argv)
    if args.scale <= 0:
        ap.error("--scale must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    if args.mutate:
        for line in mutate(args.mutate, args.seed):
            print(line)
        corpus = args.mutate
    else:
        prepare_out(args.out, args.force)
        generate(args.out, args.scale, args.seed, args.src_files)
        corpus = args.out
    print_summary(corpus)
    print(f"\nelapsed {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
