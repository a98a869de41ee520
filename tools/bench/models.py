"""Model loading from the store against mx.load of the original files.

    .venv/bin/python tools/bench/models.py --model /work/bench-corpus/models/tiny-llama \
        --work /work/bench-models [--runs 7] [--ls-models 50] [--json out.json]

Builds three stores of one model (imports under WORK, which is emptied):

* ``whole``: ``cas model import`` (the default): each file one raw object;
* ``chunked``: ``cas model import --chunked``: raw chunks cut at tensors, in packs;
* ``compressed``: ``cas add`` first (zstd chunks, as a data directory
  snapshot stores them), then ``cas model import``, which reuses them.

Each loader runs in a fresh child process (warm page cache; the same
loads alternate within the run): ``mx.load`` of every original
safetensors file, then ``cas.mlx.load_weights`` as a user calls it
(default checking: already-checked files are not hashed again), with
``verify=True`` (every tensor hashed) and ``verify=False``. Reported: median
wall seconds, its ratio to the faster of the two ``mx.load`` rows (one
runs first, one last), and peak RSS above the process's
RSS before the first load, as a multiple of the weights' size.

Then ``cas model ls`` (table and ``--json``) in a child process over a
store of ``--ls-models`` synthetic models of 200 tensors each.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

PY = sys.executable
CAS = [PY, "-m", "cas.cli"]

CHILD = r"""
import json, resource, statistics, sys, time, glob
import mlx.core as mx
from cas.mlx import load_weights
from cas.storage.store import Store
kind, target, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
base = rss_mb()
if kind == "mx.load":
    files = sorted(glob.glob(target + "/*.safetensors"))
    def load():
        out = {}
        for p in files:
            out.update(mx.load(p))
        return out
else:
    store = Store.open(target)
    verify = {"default": None, "verify": True, "noverify": False}[kind]
    def load():
        return load_weights(sys.argv[4], store=store, verify=verify)
times, nbytes = [], 0
for _ in range(runs):
    t = time.perf_counter()
    w = load()
    mx.eval(list(w.values()))
    times.append(time.perf_counter() - t)
    nbytes = sum(a.nbytes for a in w.values())
    del w
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"times": times, "peak_mb": peak, "base_mb": base, "bytes": nbytes}))
"""


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    run(cmd)
    return time.perf_counter() - t


def warm(paths: list[Path]) -> None:
    for p in paths:
        for f in (p.rglob("*") if p.is_dir() else [p]):
            if f.is_file():
                with open(f, "rb") as fh:
                    while fh.read(16 << 20):
                        pass


def build_stores(model: Path, work: Path) -> dict[str, tuple[Path, float]]:
    stores = {}
    for kind in ("whole", "chunked", "compressed"):
        store = work / kind
        run(CAS + ["--store", str(store), "init"])
        if kind == "compressed":
            run(CAS + ["--store", str(store), "add", str(model)])
        extra = ["--chunked"] if kind == "chunked" else []
        seconds = timed(CAS + ["--store", str(store), "model", "import", str(model), "--name", "m",
                               *extra])
        stores[kind] = (store, seconds)
    return stores


def load_child(kind: str, target: Path, runs: int) -> dict:
    out = run([PY, "-c", CHILD, kind, str(target), str(runs), "m"]).stdout
    return json.loads(out)


def write_synthetic_model(path: Path, seed: int, tensors: int = 200) -> None:
    path.mkdir(parents=True)
    header, offset, blobs = {}, 0, []
    for i in range(tensors):
        n = 64 + (seed * 7 + i * 13) % 512
        data = bytes(((seed + i + j) * 31) & 0xFF for j in range(n * 2))
        header[f"model.layers.{i // 8}.t{i % 8}.weight"] = {
            "dtype": "BF16", "shape": [n], "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(path / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))
    (path / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64 + seed,
        "num_hidden_layers": tensors // 8, "torch_dtype": "bfloat16"}))


def bench_ls(work: Path, count: int, runs: int) -> dict:
    store = work / "ls-store"
    run(CAS + ["--store", str(store), "init"])
    for i in range(count):
        src = work / "ls-src" / f"model-{i:02d}"
        write_synthetic_model(src, i)
        run(CAS + ["--store", str(store), "model", "import", str(src)])
    table = [timed(CAS + ["--store", str(store), "model", "ls"]) for _ in range(runs)]
    as_json = [timed(CAS + ["--store", str(store), "model", "ls", "--json"]) for _ in range(runs)]
    startup = [timed(CAS + ["--version"]) for _ in range(runs)]
    return {"models": count, "ls": table, "ls_json": as_json, "cas_version": startup}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--ls-models", type=int, default=50)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    weights = sum(f.stat().st_size for f in args.model.glob("*.safetensors"))
    stores = build_stores(args.model, args.work)
    warm([args.model, *[s for s, _ in stores.values()]])
    results: dict = {"model": str(args.model), "weights_bytes": weights,
                     "imports": {k: s for k, (_, s) in stores.items()}, "loads": {}}
    rows = [("mx.load (original files)", "mx.load", args.model)]
    for kind, (store, _) in stores.items():
        for mode in ("default", "verify", "noverify"):
            rows.append((f"load_weights, {kind}, {mode}", mode, store))
    # Once more at the end: the first child pays for warming the allocator.
    rows.append(("mx.load (original files, again)", "mx.load", args.model))
    for label, mode, target in rows:
        results["loads"][label] = load_child(mode, target, args.runs)
    base = min(statistics.median(results["loads"][k]["times"])
               for k in ("mx.load (original files)", "mx.load (original files, again)"))
    print(f"model: {args.model} ({weights / 1e6:,.0f} MB of safetensors); "
          f"runs per loader: {args.runs}; warm page cache\n")
    print("| loader | median s | vs mx.load | peak RSS above start | × weights |")
    print("|---|---|---|---|---|")
    for label, r in results["loads"].items():
        med = statistics.median(r["times"])
        extra = r["peak_mb"] - r["base_mb"]
        print(f"| {label} | {med:.3f} | {med / base:.2f}× | {extra:,.0f} MB | "
              f"{extra * 2**20 / weights:.2f} |")
    print("\n| import | wall s |\n|---|---|")
    for kind, seconds in results["imports"].items():
        print(f"| cas model import ({kind}) | {seconds:.2f} |")
    if args.ls_models:
        ls = bench_ls(args.work, args.ls_models, args.runs)
        results["ls"] = ls
        print(f"\n`cas model ls` over {ls['models']} models of 200 tensors (child process, median):")
        print(f"table {statistics.median(ls['ls']):.3f} s, --json "
              f"{statistics.median(ls['ls_json']):.3f} s; `cas --version` alone "
              f"{statistics.median(ls['cas_version']):.3f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
