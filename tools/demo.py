#!/usr/bin/env python3
"""The cas demo: a store for the sample data directory, shown step by step.

Copies data/ to a scratch folder, makes it a cas tree, stores it, streams a
file back and checks it against b3sum, takes snapshots around a day's
changes, shows status, log and diff, restores the earlier snapshot, verifies
every byte, and shows a flipped bit being found. Then it imports a tiny MLX
model, lists it, loads its weights straight from the store and checks a
forward pass against the original files, and writes an HTML report of how
the store grew. Each step prints the command it runs.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def step(title: str, *args: str, cwd: Path, stdout_lines: int | None = None,
         expect: int = 0) -> str:
    print(f"\n== {title}\n$ cas {shlex.join(args)}", flush=True)
    r = subprocess.run([sys.executable, "-m", "cas.cli", *args], cwd=cwd,
                       capture_output=True, text=True, errors="backslashreplace")
    lines = r.stdout.splitlines()
    shown = lines if stdout_lines is None else lines[:stdout_lines]
    for line in shown:
        print(line)
    if stdout_lines is not None and len(lines) > stdout_lines:
        print(f"... ({len(lines) - stdout_lines} more lines)")
    if r.stderr:
        print(r.stderr, end="", flush=True)
    if r.returncode != expect:
        sys.exit(f"demo step failed: cas {shlex.join(args)} exited {r.returncode}, expected {expect}")
    return r.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=REPO / "demo-out",
                        help="scratch folder (emptied first)")
    work = parser.parse_args().work
    shutil.rmtree(work, ignore_errors=True)
    tree = work / "assistant-data"
    shutil.copytree(REPO / "data", tree)

    step("create a store in the data directory", "init", cwd=tree)
    added = step("store every file (id = BLAKE3 of the content, as b3sum prints)", "add", ".", cwd=tree)
    ids = dict(reversed(line.split("  ", 1)) for line in added.splitlines())
    log_id = ids["./events/2026-11-25.jsonl"]
    out = step("stream a file back by a short id prefix", "cat", log_id[:8], cwd=tree, stdout_lines=2)
    if out.encode() != (tree / "events" / "2026-11-25.jsonl").read_bytes():
        sys.exit("demo: cat returned different bytes")
    if shutil.which("b3sum"):
        b3 = subprocess.run(["b3sum", "events/2026-11-25.jsonl"], cwd=tree,
                            capture_output=True, text=True).stdout.split()[0]
        print(f"b3sum agrees: {b3 == log_id} ({b3[:16]}…)")

    step("snapshot the whole tree", "snapshot", "-m", "morning", cwd=tree)
    print("\n(the assistant appends to today's event log and edits a note)")
    with open(tree / "events" / "2026-11-25.jsonl", "a") as f:
        f.write('{"ts":"2026-11-25T19:00:00Z","type":"chat.message","seq":999}\n')
    (tree / "notes" / "ideas.md").write_text("# Ideas\n\n- keep every model version in cas\n")
    (tree / "notes" / "2026-11-20-model-cleanup.md").unlink()
    step("what changed since the last snapshot", "status", cwd=tree)
    step("snapshot again: only the changed files are read", "snapshot", "-m", "evening", cwd=tree)
    step("history", "log", cwd=tree)
    step("what the evening snapshot changed", "diff", "HEAD~1", "HEAD", cwd=tree)
    step("a file as it was this morning", "cat", "HEAD~1:notes/ideas.md", cwd=tree, stdout_lines=3)
    restored = work / "restored-morning"
    step("restore the morning snapshot elsewhere", "restore", "HEAD~1", "--to", str(restored), cwd=tree)
    if not (restored / "notes" / "2026-11-20-model-cleanup.md").exists():
        sys.exit("demo: the restored morning tree lacks a file")
    step("store statistics", "stats", cwd=tree)
    step("rehash every stored byte, and check every snapshot", "verify", "--full", cwd=tree)
    step("the index is a cache: rebuild it from objects, packs and refs", "index", "rebuild", cwd=tree)
    step("and everything still verifies", "verify", "--full", cwd=tree)
    damaged = work / "damaged-copy"
    shutil.copytree(tree / ".cas", damaged)
    # Flip one bit inside the stored bytes of this morning's event log (its
    # first chunk, if it is stored in chunks), in a pack or a loose file.
    from cas.objectid import ObjectId
    from cas.storage.store import Store
    with Store.open(str(damaged)) as store:
        target = ObjectId.parse(log_id)
        chunks = store.chunk_list(target)
        target = chunks.chunks[0][0] if chunks else target
        entry = store.entry(target)
        if entry.pack is not None:
            holder = Path(store.layout.pack_path(entry.pack))
            offset = entry.offset + entry.stored_length // 2
        else:
            holder = Path(store.layout.loose_path(target, entry.encoding))
            offset = entry.stored_length // 2
    holder.chmod(0o644)
    data = bytearray(holder.read_bytes())
    data[offset] ^= 0x01
    holder.write_bytes(bytes(data))
    print("\n(flipped one bit inside events/2026-11-25.jsonl as stored, in a copy of the store)")
    step("a flipped bit is found, with the snapshots and paths it hurts (exit 1)",
         "--store", str(damaged), "verify", "--full", cwd=work, expect=1)
    models_demo(work, tree)
    growth_demo(work, tree)
    print(f"\ndemo store left in {tree / '.cas'}")


def growth_demo(work: Path, tree: Path) -> None:
    """How the store grew, as a table and as an offline HTML page."""
    step("growth per snapshot (on a terminal, a chart follows the table)",
         "stats", "--history", "--by", "snapshot", cwd=tree)
    report = work / "report.html"
    step("one self-contained page: growth charts, the paths that grew most, models by size",
         "report", "--html", str(report), cwd=tree)
    print(f"report: {report}")


def models_demo(work: Path, tree: Path) -> None:
    """A tiny MLX model: import, list, load from the store, run, compare."""
    sys.path.insert(0, str(REPO / "tools"))
    import mlx.core as mx
    import tiny_model
    from cas.mlx import load_config, load_weights

    src = work / "tiny-coder"
    model, config = tiny_model.build(seed=7)
    tiny_model.save(model, config, str(src))
    print(f"\n(built a tiny MLX model with mlx.nn, seed 7, in {src})")
    step("import the model: a named history in the store", "model", "import", str(src),
         "--name", "tiny-coder", cwd=tree)
    step("importing it again stores nothing", "model", "import", str(src), "--name", "tiny-coder",
         cwd=tree)
    step("the model inventory", "model", "ls", cwd=tree)
    step("what the model is", "model", "show", "tiny-coder", cwd=tree, stdout_lines=8)
    store = str(tree / ".cas")
    tokens = [1, 17, 42, 99, 3]
    from_store = tiny_model.forward(load_config("tiny-coder", store=store),
                                    load_weights("tiny-coder", store=store), tokens)
    from_files = tiny_model.forward(config, mx.load(str(src / "model.safetensors")), tokens)
    same = mx.array_equal(from_store, from_files).item()
    print("\n== load the weights straight from the store and run a forward pass")
    print(">>> cas.mlx.load_weights('tiny-coder') -> TinyLM -> logits for", tokens)
    print(f"logits {from_store.shape}, first row starts {from_store[0, 0, :4].tolist()}")
    print(f"equal to the logits from the original files: {same}")
    if not same:
        sys.exit("demo step failed: the model loaded from the store gave different logits")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(REPO))
    sys.path.insert(0, str(REPO))
    main()
