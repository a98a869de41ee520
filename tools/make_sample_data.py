#!/usr/bin/env python3
"""Build the sample data directory ``data/`` used by the ``cas`` project.

``cas`` is a content-addressed store for the data directory of a local AI
assistant.  Tests, demos and benchmarks need a small but realistic example of
such a directory, and they need it to be *reproducible*: the same input must
always hash to the same objects.  This script builds that directory from a
fixed seed so that anyone can regenerate it byte-for-byte and check it against
what is committed.

What it builds (well under 2 MB in total)::

    data/
      db/state.db                        sessions + app_state (SQLite)
      db/memory.db                       agent memory notes with embedding BLOBs
      db/settings.db                     per-model settings + settings history
      events/2026-11-2{3,4,5}.jsonl      one JSON event per line
      coding-models-inventory.json       models in the local Hugging Face cache
      external-ssd-model-inventory.json  models on the external SSD
      mlx-knife-list.txt                 ``mlxk list --all`` style listing
      config/assistant.json              assistant settings
      config/prompts/system.md           system prompt
      notes/*.md, notes/.keep            a few markdown notes, one empty file

The pieces are cross-referenced the way a real assistant's data would be:
sessions name models from the inventories, events belong to sessions in
``state.db``, ``memory.write`` events correspond to rows in ``memory.db``, and
the ``mlx-knife`` listing agrees with the inventories on IDs and sizes.

Determinism rules followed throughout:

* all randomness comes from ``random.Random(SEED)``; each section gets its own
  child generator (seeded from the master in a fixed order) so that editing
  one section does not reshuffle the others;
* only ``random()``-based draws (``randint``, ``choice``, ``sample`` ...) and
  exactly rounded arithmetic (``+ - * /``, ``sqrt``) are used, never ``gauss``
  or other libm-based functions whose last bit may differ between platforms;
* every timestamp is derived from the fixed ``NOW`` below, never the clock;
* files are written as bytes with ``\\n`` line endings; JSON key order is fixed;
* SQLite files use a fixed page size, ``journal_mode=DELETE``, no
  auto-vacuum, ``secure_delete`` and a final ``VACUUM``.  The SQLite header
  records the library version that wrote the file (bytes 92-99), so the
  databases are byte-identical for a given SQLite version (3.40.1 when the
  committed copy was made), not necessarily across SQLite releases.

Usage::

    python3 tools/make_sample_data.py               # (re)build <repo>/data
    python3 tools/make_sample_data.py --out /tmp/d  # build elsewhere

The default target is owned by this script: it is rebuilt in full and files
the script no longer produces are removed.  Any other ``--out`` directory must
be empty or absent unless ``--force`` is given; with ``--force`` the generated
files overwrite same-named files there and nothing else is touched.

Standard library only; Python 3.11+.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import shutil
import sqlite3
import struct
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

SEED = 20261125
NOW = datetime(2026, 11, 25, 18, 30, 0, tzinfo=timezone.utc)
EVENT_DAYS = ("2026-11-23", "2026-11-24", "2026-11-25")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "data"

LOCAL_STORE = "~/.cache/huggingface/hub"
SSD_STORE = "/Volumes/ExternalSSD/models/hub"

SQLITE_PAGE_SIZE = 4096
SQLITE_APPLICATION_ID = 0x4C414944  # "LAID": local assistant data
EMBEDDING_DIM = 64
EMBEDDING_MODEL = "mlx-community/bge-small-en-v1.5-bf16"

GB = 1_000_000_000
MB = 1_000_000


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------

def iso(dt: datetime) -> str:
    """UTC timestamp with millisecond precision, e.g. 2026-11-25T18:30:00.000Z."""
    dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def iso_s(dt: datetime) -> str:
    """UTC timestamp with second precision, e.g. 2026-11-25T18:30:00Z."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def day_start(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=timezone.utc)


def fake_hash(*parts: str) -> str:
    """A stable 40-hex-digit id (looks like a git commit) derived from *parts*."""
    return hashlib.sha1("\0".join(parts).encode("utf-8")).hexdigest()


def new_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def to_json(obj: object) -> bytes:
    """Pretty JSON for config and inventory files (fixed key order)."""
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def to_jsonl_line(obj: object) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def human_size(n: int) -> str:
    if n >= GB:
        return f"{n / GB:.1f} GB"
    if n >= MB:
        return f"{n / MB:.1f} MB"
    return f"{n / 1000:.1f} KB"


def human_age(then: datetime, now: datetime = NOW) -> str:
    """'3 days ago' style age, as printed by mlx-knife."""
    secs = int((now - then).total_seconds())
    for unit, size in (("month", 30 * 86400), ("week", 7 * 86400), ("day", 86400),
                       ("hour", 3600), ("minute", 60)):
        if secs >= size:
            k = secs // size
            return f"{k} {unit}{'s' if k != 1 else ''} ago"
    return "just now"


# --------------------------------------------------------------------------
# the model catalogue
# --------------------------------------------------------------------------

# Tokenizer / auxiliary files per model family: (file name, approximate size).
TOKENIZER_FILES: dict[str, list[tuple[str, int]]] = {
    "qwen": [("added_tokens.json", 605), ("merges.txt", 1_671_853),
             ("special_tokens_map.json", 613), ("tokenizer.json", 7_031_645),
             ("tokenizer_config.json", 7_306), ("vocab.json", 2_776_833)],
    "llama3": [("special_tokens_map.json", 296), ("tokenizer.json", 9_085_657),
               ("tokenizer_config.json", 55_351)],
    "mistral": [("special_tokens_map.json", 414), ("tokenizer.json", 3_671_337),
                ("tokenizer.model", 587_404), ("tokenizer_config.json", 137_723)],
    "phi3": [("added_tokens.json", 293), ("special_tokens_map.json", 569),
             ("tokenizer.json", 1_844_409), ("tokenizer.model", 499_723),
             ("tokenizer_config.json", 3_170)],
    "gemma": [("special_tokens_map.json", 636), ("tokenizer.json", 17_525_357),
              ("tokenizer.model", 4_241_003), ("tokenizer_config.json", 46_405)],
    "deepseek": [("special_tokens_map.json", 482), ("tokenizer.json", 4_617_594),
                 ("tokenizer_config.json", 1_870)],
    "starcoder": [("merges.txt", 442_297), ("special_tokens_map.json", 958),
                  ("tokenizer.json", 2_196_590), ("tokenizer_config.json", 7_069),
                  ("vocab.json", 776_837)],
    "whisper": [("multilingual.tiktoken", 816_730)],
    "bert": [("special_tokens_map.json", 695), ("tokenizer.json", 711_396),
             ("tokenizer_config.json", 1_242), ("vocab.txt", 231_508)],
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    architecture: str
    params_b: float          # billions of parameters
    quant: str               # "4bit", "8bit" or a dtype such as "bfloat16"
    family: str              # key into TOKENIZER_FILES
    kind: str                # chat | base | embedding | audio
    store: str               # LOCAL_STORE or SSD_STORE
    framework: str = "MLX"


CATALOGUE: tuple[ModelSpec, ...] = (
    # --- local cache: coding models ---------------------------------------
    ModelSpec("mlx-community/Qwen2.5-Coder-7B-Instruct-4bit", "qwen2", 7.62, "4bit", "qwen", "chat", LOCAL_STORE),
    ModelSpec("mlx-community/Qwen2.5-Coder-14B-Instruct-4bit", "qwen2", 14.77, "4bit", "qwen", "chat", LOCAL_STORE),
    ModelSpec("mlx-community/Qwen2.5-Coder-32B-Instruct-4bit", "qwen2", 32.76, "4bit", "qwen", "chat", LOCAL_STORE),
    ModelSpec("mlx-community/Qwen2.5-Coder-1.5B-Instruct-8bit", "qwen2", 1.54, "8bit", "qwen", "chat", LOCAL_STORE),
    ModelSpec("mlx-community/Qwen3-Coder-30B-A3B-Instruct-4bit", "qwen3_moe", 30.53, "4bit", "qwen", "chat", LOCAL_STORE),
    ModelSpec("mlx-community/DeepSeek-Coder-V2-Lite-Instruct-4bit-mlx", "deepseek_v2", 15.71, "4bit", "deepseek", "chat", LOCAL_STORE),
    ModelSpec("mlx-community/Codestral-22B-v0.1-4bit", "mistral", 22.25, "4bit", "mistral", "chat", LOCAL_STORE),
    ModelSpec("mlx-community/Devstral-Small-2505-4bit", "mistral", 23.57, "4bit", "mistral", "chat", LOCAL_STORE),
    ModelSpec("mlx-community/starcoder2-7b-4bit", "starcoder2", 7.17, "4bit", "starcoder", "base", LOCAL_STORE),
    # --- external SSD: general models -------------------------------------
    ModelSpec("mlx-community/Llama-3.3-70B-Instruct-4bit", "llama", 70.55, "4bit", "llama3", "chat", SSD_STORE),
    ModelSpec("mlx-community/Meta-Llama-3.1-8B-Instruct-4bit", "llama", 8.03, "4bit", "llama3", "chat", SSD_STORE),
    ModelSpec("mlx-community/Llama-3.2-3B-Instruct-8bit", "llama", 3.21, "8bit", "llama3", "chat", SSD_STORE),
    ModelSpec("mlx-community/Mistral-7B-Instruct-v0.3-4bit", "mistral", 7.25, "4bit", "mistral", "chat", SSD_STORE),
    ModelSpec("mlx-community/Mixtral-8x7B-Instruct-v0.1-4bit", "mixtral", 46.70, "4bit", "mistral", "chat", SSD_STORE),
    ModelSpec("mlx-community/Phi-3-mini-4k-instruct-4bit", "phi3", 3.82, "4bit", "phi3", "chat", SSD_STORE),
    ModelSpec("mlx-community/gemma-2-9b-it-4bit", "gemma2", 9.24, "4bit", "gemma", "chat", SSD_STORE),
    ModelSpec("mlx-community/Qwen2.5-72B-Instruct-4bit", "qwen2", 72.71, "4bit", "qwen", "chat", SSD_STORE),
    ModelSpec("mlx-community/Qwen2.5-7B-Instruct-bf16", "qwen2", 7.62, "bfloat16", "qwen", "chat", SSD_STORE),
    ModelSpec("mlx-community/whisper-large-v3-turbo", "whisper", 0.81, "float16", "whisper", "audio", SSD_STORE),
    ModelSpec("mlx-community/bge-small-en-v1.5-bf16", "bert", 0.033, "bfloat16", "bert", "embedding", SSD_STORE),
    ModelSpec("BAAI/bge-small-en-v1.5", "bert", 0.033, "float32", "bert", "embedding", SSD_STORE, framework="PyTorch"),
)

DTYPE_BITS = {"float32": 32, "bfloat16": 16, "float16": 16}
MAX_SHARD_BYTES = 5_300_000_000


def weight_bytes(spec: ModelSpec, rng: random.Random) -> int:
    """Approximate safetensors payload: params * bits, plus group scales/biases."""
    if spec.quant.endswith("bit"):
        bits = int(spec.quant[:-3]) + 0.5        # fp16 scale+bias per 64 weights
    else:
        bits = DTYPE_BITS[spec.quant]
    base = spec.params_b * 1e9 * bits / 8
    return int(base * (1 + rng.randint(-150, 150) / 10_000))


def model_files(spec: ModelSpec, rng: random.Random) -> list[dict]:
    """The file list of one model snapshot, sorted by path."""
    files = [("README.md", rng.randint(900, 4200)), ("config.json", rng.randint(700, 2400))]
    if spec.kind in ("chat", "base"):
        files.append(("generation_config.json", rng.randint(180, 260)))
    files += TOKENIZER_FILES[spec.family]

    total = weight_bytes(spec, rng)
    ext = "bin" if spec.framework == "PyTorch" else "safetensors"
    stem = "pytorch_model" if spec.framework == "PyTorch" else "model"
    shards = max(1, math.ceil(total / MAX_SHARD_BYTES))
    if shards == 1:
        files.append((f"{stem}.{ext}", total))
    else:
        each = total // shards
        for i in range(1, shards + 1):
            size = each if i < shards else total - each * (shards - 1)
            files.append((f"{stem}-{i:05d}-of-{shards:05d}.{ext}", size))
        files.append((f"{stem}.{ext}.index.json", 20_000 + 120 * shards * rng.randint(40, 90)))
    return [{"path": p, "size_bytes": s} for p, s in sorted(files)]


@dataclass
class Model:
    spec: ModelSpec
    revision: str
    files: list[dict]
    modified: datetime
    last_used: datetime | None

    @property
    def size_bytes(self) -> int:
        return sum(f["size_bytes"] for f in self.files)

    @property
    def short_name(self) -> str:
        return self.spec.name.split("/", 1)[1]


def build_models(rng: random.Random) -> list[Model]:
    models = []
    for spec in CATALOGUE:
        files = model_files(spec, rng)
        modified = NOW - timedelta(days=rng.randint(2, 220), seconds=rng.randint(0, 86399))
        last_used = None
        if spec.kind != "embedding" or spec.framework == "MLX":
            last_used = NOW - timedelta(minutes=rng.randint(5, 60 * 24 * 40))
            last_used = max(last_used, modified + timedelta(hours=1))
        models.append(Model(spec, fake_hash("revision", spec.name), files, modified, last_used))
    return models


# --------------------------------------------------------------------------
# sessions, events and memory notes
# --------------------------------------------------------------------------

TOPICS = (
    "refactoring the tokenizer cache", "a flaky pytest fixture", "SQLite WAL checkpoints",
    "quantizing a model to 4-bit", "Rust lifetimes in an iterator adapter",
    "rebasing a long-lived branch", "a Swift concurrency warning", "zstd dictionary training",
    "the backup rotation script", "an off-by-one in the pager", "rewriting a shell loop in Python",
    "LMDB map size errors", "a Metal out-of-memory crash", "BLAKE3 vs SHA-256 throughput",
    "a slow regex in the log parser", "typing a decorator with ParamSpec",
    "moving models to the external SSD", "the weekly reading list", "a recipe for focaccia",
    "planning the Lisbon trip", "the monthly budget spreadsheet", "a cover letter draft",
)
USER_OPENERS = (
    "Can you help me with", "I'm stuck on", "Quick question about", "Explain", "Let's continue with",
    "What's the cleanest way to handle", "Review my approach to", "Give me a checklist for",
)
ASSISTANT_OPENERS = (
    "Sure - here is a step-by-step plan for", "The short answer about", "Looking at",
    "Here's a minimal example covering", "Two options for", "I'd start by isolating",
    "Good catch; the issue with", "A summary of what we know about",
)
TAILS = (
    "without breaking the public API.", "and keep it testable.", "on an M2 with 32 GB of RAM.",
    "so that reruns are idempotent.", "with a fallback for older Python versions.",
    "and document the trade-offs.", "— ideally in under fifty lines.", "before Friday's release.",
)
TOOLS = (
    ("fs.read", 0.30), ("fs.write", 0.10), ("shell.run", 0.20), ("web.search", 0.12),
    ("code.search", 0.15), ("calendar.lookup", 0.05), ("python.exec", 0.08),
)
NOTE_KINDS = ("fact", "preference", "summary", "todo")
NOTE_TEMPLATES = {
    "fact": ("The user's main machine is an M{n} MacBook Pro with {ram} GB of RAM.",
             "Project {proj} uses Python {py} and pytest.",
             "Large models live on the external SSD at /Volumes/ExternalSSD/models.",
             "The {proj} repository's default branch is main; CI runs on push.",
             "{model} loads in about {secs} s from the local cache."),
    "preference": ("Prefers concise answers with code first, explanation after.",
                   "Likes type hints and small functions in Python code.",
                   "Wants British spelling in prose ('colour', 'optimise').",
                   "Prefers {model} for coding questions.",
                   "Asks for shell commands that are safe to copy-paste (no sudo)."),
    "summary": ("Discussed {topic}; agreed to try the simplest fix first.",
                "Session about {topic} ended with a working prototype.",
                "Compared approaches for {topic}; the user picked the second one.",
                "Debugged {topic}; root cause was a stale cache entry."),
    "todo": ("Follow up on {topic} next week.",
             "Re-run the benchmark after {topic} is merged.",
             "Remind the user to back up notes before moving models.",
             "Check whether {model} has a newer revision."),
}
TAGS = ("coding", "python", "rust", "models", "storage", "travel", "personal", "work",
        "sqlite", "mlx", "backup", "writing", "planning", "perf")
PROJECTS = ("cas", "mlx-knife", "dotfiles", "homelab", "recipe-box", "budget")


@dataclass
class Session:
    id: str
    title: str
    model: str
    started_at: datetime
    ended_at: datetime
    message_count: int = 0
    token_count: int = 0
    status: str = "closed"
    pinned: int = 0
    events: list[dict] = field(default_factory=list)


@dataclass
class Note:
    id: int
    created_at: datetime
    kind: str
    text: str
    source_session: str | None
    importance: float
    tags: list[str]
    embedding: bytes
    updated_at: datetime | None = None


def sentence(rng: random.Random, openers: tuple[str, ...], topic: str) -> str:
    return f"{rng.choice(openers)} {topic} {rng.choice(TAILS)}"


def embedding(rng: random.Random) -> bytes:
    """A unit-length float32 vector packed little-endian (256 bytes for 64 dims)."""
    v = [rng.random() * 2.0 - 1.0 for _ in range(EMBEDDING_DIM)]
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return struct.pack(f"<{EMBEDDING_DIM}f", *(x / norm for x in v))


def chat_models(models: list[Model]) -> list[str]:
    return [m.spec.name for m in models if m.spec.kind == "chat" and m.spec.framework == "MLX"]


def build_sessions(rng: random.Random, models: list[Model]) -> list[Session]:
    """~320 sessions between September and NOW; the last three days are busy."""
    names = chat_models(models)
    favourites = names[:3] + ["mlx-community/Meta-Llama-3.1-8B-Instruct-4bit"]
    starts: list[datetime] = []
    first = day_start("2026-09-01")
    for _ in range(280):
        starts.append(first + timedelta(seconds=rng.randint(0, 83 * 86400)))
    for day in EVENT_DAYS:
        for _ in range(14):
            starts.append(day_start(day) + timedelta(seconds=rng.randint(7 * 3600, 17 * 3600)))
    starts.sort()

    sessions = []
    for start in starts:
        model = rng.choice(favourites) if rng.random() < 0.7 else rng.choice(names)
        topic = rng.choice(TOPICS)
        title = topic[0].upper() + topic[1:]
        duration = timedelta(seconds=rng.randint(90, 75 * 60))
        sessions.append(Session(new_uuid(rng), title, model, start, start + duration,
                                message_count=rng.randint(2, 60),
                                token_count=rng.randint(300, 48_000),
                                pinned=int(rng.random() < 0.06)))
    sessions[-1].status = "active"
    return sessions


def make_event(ts: datetime, etype: str, session: Session, seq: int, data: dict) -> dict:
    return {"ts": iso(ts), "type": etype, "session_id": session.id, "seq": seq, "data": data}


def session_events(rng: random.Random, session: Session, next_note_id: int,
                   models_by_name: dict[str, Model]) -> tuple[list[dict], list[Note]]:
    """Events of one session, plus the memory notes its memory.write events created."""
    events: list[dict] = []
    notes: list[Note] = []
    ts = session.started_at
    seq = 0

    def emit(etype: str, data: dict, gap: tuple[int, int] = (200, 4000)) -> None:
        nonlocal ts, seq
        ts = ts + timedelta(milliseconds=rng.randint(*gap))
        seq += 1
        events.append(make_event(ts, etype, session, seq, data))

    emit("session.start", {"client": rng.choice(["cli", "web", "vscode"]), "title": session.title})
    model = models_by_name[session.model]
    emit("model.load", {"model": session.model, "revision": model.revision[:8],
                        "store": model.spec.store, "load_ms": rng.randint(900, 28_000),
                        "resident_bytes": model.size_bytes, "cached": rng.random() < 0.55})
    topic = session.title.lower()
    turns = rng.randint(4, 11)
    total_tokens = 0
    for turn in range(turns):
        user_text = sentence(rng, USER_OPENERS, topic)
        emit("chat.message", {"role": "user", "chars": len(user_text),
                              "tokens": len(user_text) // 4, "preview": user_text[:96]},
             gap=(8_000, 120_000))
        for _ in range(rng.choice((0, 0, 0, 1, 1, 2))):
            tool = rng.choices([t for t, _ in TOOLS], weights=[w for _, w in TOOLS])[0]
            ok = rng.random() < 0.93
            emit("tool.call", {"tool": tool, "call_id": f"call_{rng.getrandbits(48):012x}",
                               "duration_ms": rng.randint(3, 4_500), "ok": ok,
                               **({} if ok else {"error": rng.choice(
                                   ["timeout", "ENOENT", "permission denied", "exit status 1"])})})
        reply = sentence(rng, ASSISTANT_OPENERS, topic)
        out_tokens = rng.randint(40, 900)
        total_tokens += out_tokens + len(user_text) // 4
        emit("chat.message", {"role": "assistant", "model": session.model, "chars": out_tokens * 4,
                              "tokens": out_tokens, "tok_per_s": round(rng.uniform(9.0, 95.0), 1),
                              "preview": reply[:96]},
             gap=(1_500, 45_000))
        if rng.random() < 0.18:
            note = make_note(rng, next_note_id + len(notes), ts, session, topic, models_by_name)
            notes.append(note)
            emit("memory.write", {"note_id": note.id, "kind": note.kind,
                                  "importance": note.importance, "tags": note.tags,
                                  "embedding_model": EMBEDDING_MODEL, "dim": EMBEDDING_DIM})
            note.created_at = ts                # the row is committed when the event is logged
    if session.status != "active":
        emit("model.unload", {"model": session.model, "reason": rng.choice(["idle", "session_end"])})
        emit("session.end", {"turns": turns, "tokens": total_tokens})
    session.message_count = turns * 2
    session.token_count = total_tokens
    session.ended_at = ts
    return events, notes


def make_note(rng: random.Random, note_id: int, ts: datetime, session: Session | None,
              topic: str, models_by_name: dict[str, Model]) -> Note:
    kind = rng.choices(NOTE_KINDS, weights=(4, 2, 3, 1))[0]
    text = rng.choice(NOTE_TEMPLATES[kind]).format(
        n=rng.choice((1, 2, 3, 4)), ram=rng.choice((16, 24, 32, 64)), proj=rng.choice(PROJECTS),
        py=rng.choice(("3.11", "3.12")), model=rng.choice(sorted(n for n, m in models_by_name.items()
                                if m.spec.kind == "chat")).split("/")[-1],
        secs=rng.randint(2, 40), topic=topic)
    tags = sorted(rng.sample(TAGS, rng.randint(1, 3)))
    return Note(note_id, ts, kind, text, session.id if session else None,
                round(rng.random(), 3), tags, embedding(rng))


def build_events(rng: random.Random, sessions: list[Session],
                 models: list[Model], first_note_id: int) -> tuple[dict[str, list[dict]], list[Note]]:
    """JSONL events per day for the sessions started on EVENT_DAYS."""
    by_name = {m.spec.name: m for m in models}
    per_day: dict[str, list[dict]] = {d: [] for d in EVENT_DAYS}
    notes: list[Note] = []
    for s in sessions:
        day = s.started_at.date().isoformat()
        if day not in per_day:
            continue
        events, new_notes = session_events(rng, s, first_note_id + len(notes), by_name)
        notes += new_notes
        for ev in events:                      # a session may run past midnight
            per_day.setdefault(ev["ts"][:10], []).append(ev)
    for day in per_day:
        per_day[day].sort(key=lambda e: (e["ts"], e["session_id"], e["seq"]))
    return per_day, notes


def build_background_notes(rng: random.Random, sessions: list[Session], models: list[Model],
                           count: int) -> list[Note]:
    """Older memory notes, from sessions before the event-log window."""
    by_name = {m.spec.name: m for m in models}
    older = [s for s in sessions if s.started_at < day_start(EVENT_DAYS[0])]
    notes = []
    for i in range(count):
        session = rng.choice(older) if rng.random() < 0.8 else None
        ts = session.ended_at if session else day_start("2026-08-15") + timedelta(
            seconds=rng.randint(0, 14 * 86400))
        topic = session.title.lower() if session else rng.choice(TOPICS)
        note = make_note(rng, i + 1, ts, session, topic, by_name)
        if rng.random() < 0.15:
            note.updated_at = ts + timedelta(days=rng.randint(1, 20))
        notes.append(note)
    notes.sort(key=lambda n: (n.created_at, n.text))
    for i, note in enumerate(notes, start=1):
        note.id = i
    return notes


def mark_last_used(models: list[Model], sessions: list[Session]) -> None:
    """Make each model's last_used at least as late as the sessions that used it."""
    for m in models:
        used = [s.ended_at for s in sessions if s.model == m.spec.name]
        if used:
            m.last_used = max([*used, *([m.last_used] if m.last_used else [])])


# --------------------------------------------------------------------------
# SQLite
# --------------------------------------------------------------------------

def write_sqlite(path: Path, schema: str, user_version: int,
                 rows: dict[str, tuple[str, list[tuple]]]) -> None:
    """Create *path* afresh, fill it and VACUUM it into a deterministic file."""
    for p in (path, path.with_name(path.name + "-journal")):
        p.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute(f"PRAGMA page_size = {SQLITE_PAGE_SIZE}")
        con.execute("PRAGMA auto_vacuum = NONE")
        con.execute("PRAGMA journal_mode = DELETE")
        con.execute("PRAGMA secure_delete = ON")
        con.execute(f"PRAGMA application_id = {SQLITE_APPLICATION_ID}")
        con.execute(f"PRAGMA user_version = {user_version}")
        con.executescript(schema)
        con.execute("BEGIN")
        for _table, (sql, values) in rows.items():
            con.executemany(sql, values)
        con.execute("COMMIT")
        con.execute("VACUUM")
    finally:
        con.close()


STATE_SCHEMA = """
CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    title         TEXT NOT NULL,
    model         TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    ended_at      TEXT,
    message_count INTEGER NOT NULL DEFAULT 0,
    token_count   INTEGER NOT NULL DEFAULT 0,
    status        TEXT NOT NULL CHECK (status IN ('active', 'closed')),
    pinned        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX sessions_started_at ON sessions (started_at);
CREATE TABLE app_state (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""


def write_state_db(path: Path, rng: random.Random, sessions: list[Session],
                   models: list[Model]) -> None:
    session_rows = [(s.id, s.title, s.model, iso(s.started_at),
                     None if s.status == "active" else iso(s.ended_at),
                     s.message_count, s.token_count, s.status, s.pinned) for s in sessions]
    state = {
        "schema.version": "7",
        "ui.theme": "dark",
        "ui.sidebar.width": "280",
        "ui.font_size": "14",
        "chat.last_session": sessions[-1].id,
        "chat.default_model": models[0].spec.name,
        "chat.stream": "true",
        "memory.enabled": "true",
        "memory.last_compaction": iso(NOW - timedelta(days=3, hours=4)),
        "models.last_scan": iso(NOW - timedelta(minutes=42)),
        "models.local_store": LOCAL_STORE,
        "models.ssd_store": SSD_STORE,
        "events.retention_days": "30",
        "onboarding.completed": "true",
        "telemetry.enabled": "false",
    }
    for i, s in enumerate(sorted(sessions, key=lambda s: s.ended_at)[-25:]):
        state[f"recent.{i:02d}"] = s.id
    started = {s.id: s.started_at for s in sessions}
    state_rows = []
    for key in sorted(state):
        updated = NOW - timedelta(seconds=rng.randint(60, 60 * 86400))
        if state[key] in started:               # keys naming a session change with it
            updated = started[state[key]]
        state_rows.append((key, state[key], iso(updated)))
    write_sqlite(path, STATE_SCHEMA, 7, {
        "sessions": ("INSERT INTO sessions VALUES (?,?,?,?,?,?,?,?,?)", session_rows),
        "app_state": ("INSERT INTO app_state VALUES (?,?,?)", state_rows),
    })


MEMORY_SCHEMA = """
CREATE TABLE notes (
    id              INTEGER PRIMARY KEY,
    created_at      TEXT NOT NULL,
    updated_at      TEXT,
    kind            TEXT NOT NULL CHECK (kind IN ('fact', 'preference', 'summary', 'todo')),
    text            TEXT NOT NULL,
    source_session  TEXT,
    importance      REAL NOT NULL,
    embedding_model TEXT NOT NULL,
    embedding_dim   INTEGER NOT NULL,
    embedding       BLOB NOT NULL
);
CREATE INDEX notes_created_at ON notes (created_at);
CREATE TABLE note_tags (
    note_id INTEGER NOT NULL REFERENCES notes (id),
    tag     TEXT NOT NULL,
    PRIMARY KEY (note_id, tag)
) WITHOUT ROWID;
"""


def write_memory_db(path: Path, notes: list[Note]) -> None:
    note_rows = [(n.id, iso(n.created_at), iso(n.updated_at) if n.updated_at else None, n.kind,
                  n.text, n.source_session, n.importance, EMBEDDING_MODEL, EMBEDDING_DIM,
                  n.embedding) for n in notes]
    tag_rows = [(n.id, t) for n in notes for t in n.tags]
    write_sqlite(path, MEMORY_SCHEMA, 3, {
        "notes": ("INSERT INTO notes VALUES (?,?,?,?,?,?,?,?,?,?)", note_rows),
        "note_tags": ("INSERT INTO note_tags VALUES (?,?)", tag_rows),
    })


SETTINGS_SCHEMA = """
CREATE TABLE model_settings (
    model      TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (model, key)
);
CREATE TABLE settings_history (
    id         INTEGER PRIMARY KEY,
    changed_at TEXT NOT NULL,
    scope      TEXT NOT NULL,
    key        TEXT NOT NULL,
    old_value  TEXT,
    new_value  TEXT NOT NULL,
    source     TEXT NOT NULL
);
"""

MODEL_SETTING_KEYS = ("context_length", "max_tokens", "repetition_penalty", "temperature",
                      "top_p", "system_prompt", "chat_template", "kv_cache_bits", "keep_alive_s")


GLOBAL_SETTING_VALUES: dict[str, tuple[tuple[str, str], ...]] = {
    "ui.theme": (("light", "dark"), ("dark", "light"), ("system", "dark")),
    "memory.enabled": (("false", "true"), ("true", "false")),
    "chat.default_model": (("mlx-community/Meta-Llama-3.1-8B-Instruct-4bit",
                            "mlx-community/Qwen2.5-Coder-7B-Instruct-4bit"),
                           ("mlx-community/Qwen2.5-Coder-14B-Instruct-4bit",
                            "mlx-community/Qwen2.5-Coder-7B-Instruct-4bit")),
    "events.retention_days": (("14", "30"), ("90", "30"), ("30", "60")),
}


def model_setting_value(rng: random.Random, key: str) -> str:
    if key == "context_length":
        return str(rng.choice((4096, 8192, 16384, 32768, 131072)))
    if key == "max_tokens":
        return str(rng.choice((512, 1024, 2000, 4000)))
    if key == "repetition_penalty":
        return f"{rng.choice((1.0, 1.05, 1.1, 1.15)):.2f}"
    if key == "temperature":
        return f"{rng.randint(0, 10) / 10:.1f}"
    if key == "top_p":
        return f"{rng.choice((0.8, 0.9, 0.95, 1.0)):.2f}"
    if key == "system_prompt":
        return rng.choice(("config/prompts/system.md", "builtin:coder", "builtin:concise"))
    if key == "chat_template":
        return rng.choice(("auto", "chatml", "llama3", "none"))
    if key == "kv_cache_bits":
        return str(rng.choice((0, 4, 8)))
    return str(rng.choice((0, 300, 900, 3600)))


def write_settings_db(path: Path, rng: random.Random, models: list[Model]) -> None:
    rows = []
    current: dict[tuple[str, str], str] = {}
    for m in models:
        if m.spec.framework != "MLX":
            continue
        for key in MODEL_SETTING_KEYS:
            value = model_setting_value(rng, key)
            current[(m.spec.name, key)] = value
            rows.append((m.spec.name, key, value,
                         iso(NOW - timedelta(seconds=rng.randint(3600, 90 * 86400)))))
    history = []
    scopes = sorted({name for name, _ in current})
    for _ in range(240):
        scope = rng.choice(scopes + ["global"] * 4)
        key = rng.choice(MODEL_SETTING_KEYS if scope != "global" else sorted(GLOBAL_SETTING_VALUES))
        history.append([NOW - timedelta(seconds=rng.randint(3600, 120 * 86400)), scope, key,
                        rng.choice(("ui", "cli", "api", "migration"))])
    history.sort(key=lambda h: h[0])
    hist_rows = []
    for i, (ts, scope, key, source) in enumerate(history, start=1):
        if scope == "global":
            old, new = rng.choice(GLOBAL_SETTING_VALUES[key])
        else:
            old, new = model_setting_value(rng, key), model_setting_value(rng, key)
        if rng.random() < 0.1:
            old = None                          # first time the setting was written
        hist_rows.append((i, iso(ts), scope, key, old, new, source))
    write_sqlite(path, SETTINGS_SCHEMA, 2, {
        "model_settings": ("INSERT INTO model_settings VALUES (?,?,?,?)", rows),
        "settings_history": ("INSERT INTO settings_history VALUES (?,?,?,?,?,?,?)", hist_rows),
    })


# --------------------------------------------------------------------------
# inventories, mlx-knife listing, config and notes
# --------------------------------------------------------------------------

def model_entry(m: Model) -> dict:
    entry: dict = {"name": m.spec.name, "architecture": m.spec.architecture,
                   "parameters": f"{m.spec.params_b:g}B", "framework": m.spec.framework,
                   "type": m.spec.kind, "revision": m.revision}
    if m.spec.quant.endswith("bit"):
        entry["quantization"] = {"bits": int(m.spec.quant[:-3]), "group_size": 64}
    else:
        entry["dtype"] = m.spec.quant
    entry["size_bytes"] = m.size_bytes
    entry["files"] = m.files
    entry["modified"] = iso_s(m.modified)
    entry["last_used"] = iso_s(m.last_used) if m.last_used else None
    return entry


def inventory(models: list[Model], store: str, device: dict, generated_at: datetime) -> bytes:
    chosen = sorted((m for m in models if m.spec.store == store), key=lambda m: m.spec.name.lower())
    doc = {
        "generated_at": iso_s(generated_at),
        "generator": "assistant model-scan 0.9.2",
        "store": store,
        "device": device,
        "model_count": len(chosen),
        "total_size_bytes": sum(m.size_bytes for m in chosen),
        "models": [model_entry(m) for m in chosen],
    }
    return to_json(doc)


def mlx_knife_list(models: list[Model]) -> bytes:
    """`mlxk list --all` style table: NAME ID SIZE MODIFIED FRAMEWORK TYPE."""
    header = ("NAME", "ID", "SIZE", "MODIFIED", "FRAMEWORK", "TYPE")
    rows = [(m.spec.name, m.revision[:8], human_size(m.size_bytes), human_age(m.modified),
             m.spec.framework, m.spec.kind)
            for m in sorted(models, key=lambda m: m.spec.name.lower())]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return ("\n".join(lines) + "\n").encode("utf-8")


def assistant_config(models: list[Model]) -> bytes:
    return to_json({
        "version": 3,
        "profile": "default",
        "default_model": "mlx-community/Qwen2.5-Coder-7B-Instruct-4bit",
        "fallback_model": "mlx-community/Meta-Llama-3.1-8B-Instruct-4bit",
        "model_stores": [
            {"name": "local", "path": LOCAL_STORE, "inventory": "coding-models-inventory.json"},
            {"name": "external-ssd", "path": SSD_STORE,
             "inventory": "external-ssd-model-inventory.json", "removable": True},
        ],
        "generation": {"temperature": 0.3, "top_p": 0.95, "max_tokens": 2000,
                       "repetition_penalty": 1.05, "stream": True},
        "memory": {"enabled": True, "database": "db/memory.db", "embedding_model": EMBEDDING_MODEL,
                   "embedding_dim": EMBEDDING_DIM, "top_k": 8, "min_importance": 0.25},
        "tools": {"enabled": sorted(t for t, _ in TOOLS), "confirm": ["fs.write", "shell.run"],
                  "shell": {"timeout_s": 30, "allow_network": False}},
        "events": {"directory": "events", "rotate": "daily", "retention_days": 30},
        "prompts": {"system": "config/prompts/system.md"},
        "server": {"host": "127.0.0.1", "port": 8000, "cors": False},
        "ui": {"theme": "dark", "font_size": 14, "show_token_rate": True},
        "known_models": len(models),
    })


SYSTEM_PROMPT = """\
# System prompt

You are a local assistant running entirely on this Mac. You have no network
access unless a tool explicitly provides it.

- Be concise. Put code first and explain afterwards, briefly.
- Prefer small, testable functions and type hints in Python.
- When you are unsure, say so and suggest how to check.
- Before running `shell.run` or `fs.write`, state what the command will change.
- Use the memory tools for durable facts and preferences only; never store
  secrets, passwords or API keys.

Today's date and the active model are provided in the first user message.
"""


def notes_files(models: list[Model], sessions: list[Session]) -> dict[str, bytes]:
    biggest = sorted(models, key=lambda m: -m.size_bytes)[:5]
    table = "\n".join(f"| {m.short_name} | {human_size(m.size_bytes)} | "
                      f"{'SSD' if m.spec.store == SSD_STORE else 'local'} |" for m in biggest)
    cleanup = f"""\
# Model storage clean-up — 2026-11-20

The internal disk was at 91 % again. Largest models right now:

| model | size | where |
|---|---|---|
{table}

Plan:

1. Keep the coding models in the local cache (fast loads matter there).
2. Move everything ≥ 20 GB to the external SSD and point `HF_HOME` at it.
3. Re-run the model scan so both inventories are current.
4. Delete the PyTorch copy of bge-small once the MLX one is verified.
"""
    quant = """\
# Notes on MLX quantization

- `4bit` with `group_size` 64 stores an fp16 scale and bias per 64 weights,
  so the effective cost is ~4.5 bits per weight.
- `8bit` roughly doubles the size but is noticeably better for small models
  (≤ 3 B parameters).
- bf16 weights are what you convert *from*; keep one copy per architecture.
- Mixture-of-experts models (Mixtral, Qwen3-Coder-30B-A3B) need RAM for all
  experts even though only a few are active per token.
"""
    recent = "\n".join(f"- {s.started_at:%Y-%m-%d} — {s.title} ({s.model.split('/')[-1]})"
                       for s in sessions[-6:])
    ideas = f"""\
# Ideas & follow-ups

Recent sessions worth revisiting:

{recent}

Someday/maybe:

- Snapshot the whole data folder before each upgrade (content-addressed, so
  unchanged SQLite pages and model files cost nothing).
- Try speculative decoding with the 1.5B coder as the draft model.
- Café list for Lisbon: Fábrica, Heim, Dear Breakfast.
"""
    return {
        "notes/2026-11-20-model-cleanup.md": cleanup.encode("utf-8"),
        "notes/mlx-quantization.md": quant.encode("utf-8"),
        "notes/ideas.md": ideas.encode("utf-8"),
        "notes/.keep": b"",
    }


# --------------------------------------------------------------------------
# assembling the tree
# --------------------------------------------------------------------------

def build_tree(root: Path) -> list[str]:
    """Write every sample file under *root*; return their relative paths."""
    master = random.Random(SEED)
    rngs = {name: random.Random(master.getrandbits(64)) for name in (
        "models", "sessions", "events", "notes", "state", "settings")}

    models = build_models(rngs["models"])
    sessions = build_sessions(rngs["sessions"], models)
    background = build_background_notes(rngs["notes"], sessions, models, count=300)
    events, event_notes = build_events(rngs["events"], sessions, models,
                                       first_note_id=len(background) + 1)
    notes = background + event_notes
    mark_last_used(models, sessions)

    files: dict[str, bytes] = {}
    for day, evs in sorted(events.items()):
        files[f"events/{day}.jsonl"] = b"".join(to_jsonl_line(e) for e in evs)
    device_local = {"kind": "internal", "mount": "/", "volume": "Macintosh HD"}
    device_ssd = {"kind": "external", "mount": "/Volumes/ExternalSSD", "volume": "ExternalSSD",
                  "filesystem": "APFS"}
    files["coding-models-inventory.json"] = inventory(
        models, LOCAL_STORE, device_local, NOW - timedelta(minutes=42))
    files["external-ssd-model-inventory.json"] = inventory(
        models, SSD_STORE, device_ssd, NOW - timedelta(minutes=41, seconds=17))
    files["mlx-knife-list.txt"] = mlx_knife_list(models)
    files["config/assistant.json"] = assistant_config(models)
    files["config/prompts/system.md"] = SYSTEM_PROMPT.encode("utf-8")
    files.update(notes_files(models, sessions))

    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    write_state_db(root / "db/state.db", rngs["state"], sessions, models)
    write_memory_db(root / "db/memory.db", notes)
    write_settings_db(root / "db/settings.db", rngs["settings"], models)
    return sorted([*files, "db/state.db", "db/memory.db", "db/settings.db"])


def is_default_target(out: Path) -> bool:
    return out.resolve() == DEFAULT_OUT.resolve()


def check_target(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        sys.exit(f"error: {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not is_default_target(out) and not force:
        sys.exit(f"error: {out} is not empty; refusing to write there without --force")


def install(staging: Path, out: Path, produced: list[str], prune: bool) -> None:
    """Copy the staged files into *out*; with *prune*, drop anything else there."""
    out.mkdir(parents=True, exist_ok=True)
    for rel in produced:
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(staging / rel, dest)
    if not prune:
        return
    keep = set(produced)
    for path in sorted(out.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        rel = path.relative_to(out).as_posix()
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                path.rmdir()
        elif rel not in keep:
            path.unlink()


def report(out: Path, produced: list[str]) -> None:
    total = 0
    for rel in produced:
        size = (out / rel).stat().st_size
        total += size
        print(f"{size:>9}  {rel}")
    print(f"{total:>9}  total ({len(produced)} files) in {out}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"output directory (default: {DEFAULT_OUT})")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty directory other than the default target")
    p.add_argument("-q", "--quiet", action="store_true", help="do not print the file list")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    check_target(out, args.force)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".sample-data-", dir=out.resolve().parent) as tmp:
        staging = Path(tmp)
        produced = build_tree(staging)
        install(staging, out, produced, prune=is_default_target(out))
    if not args.quiet:
        report(out, produced)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
