#!/usr/bin/env python3
"""What encryption costs: cas plain and encrypted against borg and restic.

Usage::

    python3 tools/bench/encrypted.py [--corpus /work/bench-corpus] --work DIR
        [--repeat 3] [--corpus-to-tmpfs] [--only cas-plain,cas-enc,...]
        [--quiet-wait 900] [--json OUT] [--logs DIR] [--cas CMD] [--python PY]
        [--keep]

Five configurations, each run ``--repeat`` times on a fresh target under
``WORK/runs/<config>-<run>`` (the order rotates from run to run, so no
configuration always follows another):

    cas-plain     cas --store S init
    cas-enc       cas --store S init --encrypt          (CAS_PASSWORD=bench)
    borg-repokey  borg init --encryption repokey-blake2 (BORG_PASSPHRASE=bench)
    borg-none     borg init --encryption none
    restic        restic init                           (RESTIC_PASSWORD=bench;
                                                         restic always encrypts)

and then, timed one by one: the first snapshot/backup of the corpus
(``cas snapshot``, ``borg create --compression none``, ``restic backup``),
a full restore into a fresh directory under the run's target (``cas restore
HEAD``, ``borg extract``, ``restic restore latest``), checked untimed against
the corpus (every file's BLAKE3 and size), and a full verification
(``cas verify --full``, ``borg check --verify-data``, ``restic check
--read-data``). The store size (``du -sb``) is taken after the first
snapshot. For the two cas configurations ``cas --store S log`` is timed
``--log-runs`` times per run: its median on the encrypted store minus that on
the plain one is what unlocking costs a command. Argon2id alone, at
``cas.storage.keys.DEFAULT_KDF``, is timed ``--kdf-runs`` times in one
process of the project's interpreter.

Measuring is peers.py's: each command runs as ``bash -o pipefail -c`` under
a small launcher, wall time and user+sys CPU of the whole process tree; the
corpus is read (untimed) before each backup (borg drops what it read from
the page cache) and ``sync`` runs untimed before each step. Each sample also
notes the user CPU other programs used meanwhile; a cell with a sample where
that exceeded 0.3 s + 5% of the step's wall time is marked ‡. With
``--quiet-wait S`` each run first waits (up to S seconds) until other
programs use under 5% of a CPU.

Output: the exact commands (run 1's, as a script), progress lines, then a
markdown table of medians with the ratios enc/plain and enc/borg-repokey;
``--json`` keeps every sample. Targets and restores are deleted as soon as
a run is done (on tmpfs they are memory), and so is the corpus copy made by
``--corpus-to-tmpfs``, also on Ctrl-C or SIGTERM. A measuring tool only:
nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from history import Listing, interrupted, list_tree, machine_user_s, repo_state  # noqa: E402
from peers import (DEFAULT_CAS, MB, REPO_ROOT, du_bytes, first_line, fs_type,  # noqa: E402
                   mem_total_kb, q, read_tree, resolve_cas, run_timed, scan_corpus)

CONFIGS = ("cas-plain", "cas-enc", "borg-repokey", "borg-none", "restic")
TITLES = {"cas-plain": "cas plain", "cas-enc": "cas encrypted",
          "borg-repokey": "borg repokey-blake2", "borg-none": "borg none", "restic": "restic"}
STEPS = ("init", "backup", "restore", "verify", "log")
STEP_TITLES = {"init": "init", "backup": "first snapshot", "restore": "full restore",
               "verify": "full verification", "log": "`cas log` (one snapshot)"}
PASSWORD = "bench"
DEFAULT_CORPUS = Path("/work/bench-corpus")
TMPFS = Path("/dev/shm")
DEFAULT_PYTHON = ".venv/bin/python"


# --------------------------------------------------------------------------
# configurations: shell text of each step, given the run's target directory


@dataclass
class Config:
    name: str
    env: Callable[[Path], dict[str, str]]
    init: Callable[[Path], str]
    backup: Callable[[Path, Path], str]  # (target, corpus)
    restore: Callable[[Path, Path], str]  # (target, restore dir)
    verify: Callable[[Path], str]
    restored_root: Callable[[Path, Path], Path]  # (restore dir, corpus)
    log: Callable[[Path], str] | None = None

    def store(self, t: Path) -> Path:
        return t / "repo"


def inside(restore_dir: Path, corpus: Path) -> Path:
    """Where borg and restic put the corpus: its absolute path under the target."""
    return restore_dir / corpus.relative_to(corpus.anchor)


def cas_config(name: str, cas: str, encrypt: bool) -> Config:
    def s(t: Path) -> str:
        return f"{cas} --store {q(t / 'repo')}"

    return Config(
        name,
        env=lambda t: {"CAS_PASSWORD": PASSWORD} if encrypt else {},
        init=lambda t: f"{s(t)} init" + (" --encrypt" if encrypt else ""),
        backup=lambda t, c: f"{s(t)} snapshot {q(c)}",
        restore=lambda t, r: f"{s(t)} restore HEAD --to {q(r)}",
        verify=lambda t: f"{s(t)} verify --full",
        restored_root=lambda r, c: r,
        log=lambda t: f"{s(t)} log",
    )


def borg_config(name: str, encryption: str) -> Config:
    def env(t: Path) -> dict[str, str]:
        e = {"BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes", "BORG_BASE_DIR": str(t / "borg-home")}
        if encryption == "none":
            e["BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK"] = "yes"
        else:
            e["BORG_PASSPHRASE"] = PASSWORD
        return e

    return Config(
        name, env,
        init=lambda t: f"borg init --encryption {encryption} {q(t / 'repo')}",
        backup=lambda t, c: f"borg create --compression none {q(t / 'repo')}::first {q(c)}",
        restore=lambda t, r: f"cd {q(r)} && borg extract {q(t / 'repo')}::first",
        verify=lambda t: f"borg check --verify-data {q(t / 'repo')}",
        restored_root=inside,
    )


def restic_config() -> Config:
    return Config(
        "restic",
        env=lambda t: {"RESTIC_PASSWORD": PASSWORD, "RESTIC_CACHE_DIR": str(t / "cache")},
        init=lambda t: f"restic init --repo {q(t / 'repo')}",
        backup=lambda t, c: f"restic backup --repo {q(t / 'repo')} {q(c)}",
        restore=lambda t, r: f"restic restore --repo {q(t / 'repo')} latest --target {q(r)}",
        verify=lambda t: f"restic check --read-data --repo {q(t / 'repo')}",
        restored_root=inside,
    )


def make_configs(names: list[str], cas: str) -> list[Config]:
    made = {"cas-plain": lambda: cas_config("cas-plain", cas, False),
            "cas-enc": lambda: cas_config("cas-enc", cas, True),
            "borg-repokey": lambda: borg_config("borg-repokey", "repokey-blake2"),
            "borg-none": lambda: borg_config("borg-none", "none"),
            "restic": restic_config}
    return [made[n]() for n in CONFIGS if n in names]


def script_for(cfg: Config, work: Path, corpus: Path, log_runs: int) -> list[str]:
    t = work / "runs" / f"{cfg.name}-1"
    r = t / "restore"
    lines = [f"# {TITLES[cfg.name]} (run 1; run N uses {cfg.name}-N)"]
    env = cfg.env(t)
    if env:
        lines.append("export " + " ".join(f"{k}={q(v)}" for k, v in env.items()))
    lines += [cfg.init(t), cfg.backup(t, corpus), f"mkdir {q(r)}", cfg.restore(t, r),
              f"rm -rf {q(r)}", cfg.verify(t)]
    if cfg.log is not None:
        lines.append(f"{cfg.log(t)}    # x{log_runs}")
    return lines


# --------------------------------------------------------------------------
# measuring


@dataclass
class Sample:
    config: str
    step: str
    run: int
    command: str
    wall_s: float
    cpu_s: float
    returncode: int
    other_user_s: float  # user CPU other programs used during the step
    load1: float
    log: str
    store_bytes: int | None = None
    check: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.error is None

    @property
    def disturbed(self) -> bool:
        return self.other_user_s > 0.3 + 0.05 * self.wall_s


class Bench:
    def __init__(self, args: argparse.Namespace, corpus: Path, ref) -> None:
        self.args, self.corpus, self.ref = args, corpus, ref
        self.samples: list[Sample] = []
        self.logs = args.logs

    def timed(self, cfg: Config, t: Path, step: str, run: int, command: str,
              tag: str = "") -> Sample:
        os.sync()  # untimed: write-back left by the step before is not billed here
        log = self.logs / f"{cfg.name}-run{run}-{step}{tag}.log"
        load1 = os.getloadavg()[0]
        user0 = machine_user_s()
        wall, usage, rc = run_timed(command, cfg.env(t), log, launcher=True)
        other = machine_user_s() - user0 - usage.ru_utime
        s = Sample(cfg.name, step, run, command, wall, usage.ru_utime + usage.ru_stime, rc,
                   round(other, 3), load1, str(log))
        if rc != 0:
            s.error = f"exit {rc}; see {log}"
        self.samples.append(s)
        return s

    def one_run(self, cfg: Config, run: int) -> list[Sample]:
        t = self.args.work / "runs" / f"{cfg.name}-{run}"
        shutil.rmtree(t, ignore_errors=True)
        t.mkdir(parents=True)
        mine: list[Sample] = []
        try:
            self.steps(cfg, t, run, mine)
        finally:
            if not self.args.keep:
                shutil.rmtree(t, ignore_errors=True)
        return mine

    def steps(self, cfg: Config, t: Path, run: int, mine: list[Sample]) -> None:
        mine.append(self.timed(cfg, t, "init", run, cfg.init(t)))
        if not mine[-1].ok:
            return
        read_tree(self.corpus)  # untimed: every tool backs up a warm corpus
        mine.append(self.timed(cfg, t, "backup", run, cfg.backup(t, self.corpus)))
        if not mine[-1].ok:
            return
        mine[-1].store_bytes = du_bytes(cfg.store(t))
        restore_dir = t / "restore"
        restore_dir.mkdir()
        mine.append(self.timed(cfg, t, "restore", run, cfg.restore(t, restore_dir)))
        if mine[-1].ok:
            mine[-1].check = check_restore(self.ref, self.corpus,
                                           cfg.restored_root(restore_dir, self.corpus))
            if not mine[-1].check.startswith("ok"):
                mine[-1].error = mine[-1].check
        shutil.rmtree(restore_dir, ignore_errors=True)  # on tmpfs: memory
        mine.append(self.timed(cfg, t, "verify", run, cfg.verify(t)))
        if cfg.log is not None:
            for i in range(self.args.log_runs):
                mine.append(self.timed(cfg, t, "log", run, cfg.log(t), tag=f"-{i + 1}"))


SQLITE_MAGIC = b"SQLite format 3\0"


@functools.lru_cache(maxsize=None)  # the corpus's databases are dumped once
def sqlite_digest(path: Path) -> str | None:
    """BLAKE2 of a database's SQL dump (None if it is not a readable one)."""
    with open(path, "rb") as f:
        if f.read(16) != SQLITE_MAGIC:
            return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
        try:
            h = hashlib.blake2b()
            for line in db.iterdump():
                h.update(line.encode() + b"\n")
            return h.hexdigest()
        finally:
            db.close()
    except sqlite3.Error:
        return None


def check_restore(ref: Listing, corpus: Path, root: Path) -> str:
    """'ok: ...' or what differs. cas stores SQLite databases through SQLite's
    backup API by default (a consistent copy, not a byte copy: the header's
    change counter differs), so a database whose bytes differ counts as
    restored when its SQL dump equals the original's."""
    if not root.is_dir():
        return f"DIFFERS: restored tree not found at {root}"
    got = list_tree(root, hashes=True)
    missing, extra = set(ref.meta) - set(got.meta), set(got.meta) - set(ref.meta)
    changed = sorted(p for p in set(ref.meta) & set(got.meta) if ref.b3[p] != got.b3.get(p))
    # restored files are not cached: each run's restore has its own path
    wrong = [p for p in changed if sqlite_digest(corpus / p) is None
             or sqlite_digest(corpus / p) != sqlite_digest.__wrapped__(root / p)]
    what = f"{len(got.meta):,} files, {got.bytes:,} B, all hashed"
    if missing or extra or wrong:
        return (f"DIFFERS: {len(missing)} missing, {len(extra)} extra, {len(wrong)} differ in "
                f"content (e.g. {sorted(missing | extra | set(wrong))[0]}) -- {what}")
    same_db = len(changed)
    return f"ok: {what}" + (f"; {same_db} SQLite databases equal by SQL dump" if same_db else "")


def say(samples: list[Sample], run: int, name: str) -> None:
    parts = []
    for step in STEPS:
        mine = [s for s in samples if s.step == step]
        if not mine:
            continue
        wall = statistics.median(s.wall_s for s in mine)
        text = f"{step} {wall:.2f}s"
        if any(s.store_bytes for s in mine):
            text += f" ({next(s.store_bytes for s in mine if s.store_bytes) / MB:,.1f} MB)"
        if any(not s.ok for s in mine):
            text += " FAILED: " + next(s.error or "" for s in mine if not s.ok)
        if any(s.disturbed for s in mine):
            text += " ‡"
        parts.append(text)
    print(f"  run {run} {name:<13} " + ", ".join(parts), flush=True)


def wait_quiet(limit_s: float, notes: list[str]) -> None:
    """Wait (up to limit_s) until other programs use < 5% of a CPU for 10 s."""
    t0, calm, said = time.perf_counter(), 0, False
    while calm < 2:
        u0 = machine_user_s()
        time.sleep(5)
        other = (machine_user_s() - u0) / 5
        calm = calm + 1 if other < 0.05 else 0
        if time.perf_counter() - t0 > limit_s:
            notes.append(f"started a run after {limit_s:.0f} s of waiting although other "
                         f"programs used {other:.0%} of a CPU")
            return
        if not said and other >= 0.05:
            print(f"waiting for a quiet machine (other programs use {other:.0%} of a CPU)",
                  flush=True)
            said = True


# --------------------------------------------------------------------------
# Argon2id alone


KDF_PROGRAM = """
import json, os, sys, time
from cas.storage.crypto import SALT_SIZE
from cas.storage.keys import DEFAULT_KDF, kek
salt = os.urandom(SALT_SIZE)
runs = []
for _ in range(int(sys.argv[1])):
    w, c = time.perf_counter(), time.process_time()
    kek(b"bench", salt, DEFAULT_KDF)
    runs.append((time.perf_counter() - w, time.process_time() - c))
print(json.dumps({"kdf": DEFAULT_KDF, "runs": runs}))
"""


def time_kdf(python: str, runs: int) -> dict:
    """Argon2id at the slot parameters cas uses, in the project's interpreter."""
    out = subprocess.run([python, "-c", KDF_PROGRAM, str(runs)], cwd=REPO_ROOT,
                         capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    doc = json.loads(out.stdout)
    doc["wall_s"] = statistics.median(w for w, _ in doc["runs"])
    doc["cpu_s"] = statistics.median(c for _, c in doc["runs"])
    return doc


# --------------------------------------------------------------------------
# summary


def cell_values(samples: list[Sample], config: str, step: str) -> tuple[float, float] | None:
    good = [s for s in samples if s.config == config and s.step == step and s.ok]
    if not good:
        return None
    return statistics.median(s.wall_s for s in good), statistics.median(s.cpu_s for s in good)


def cell(samples: list[Sample], config: str, step: str) -> str:
    group = [s for s in samples if s.config == config and s.step == step]
    if not group:
        return "–"
    values = cell_values(samples, config, step)
    if values is None:
        return "FAILED"
    text = f"{values[0]:.2f} ({values[1]:.2f})"
    if any(s.disturbed for s in group):
        text += " ‡"
    if any(not s.ok for s in group):
        text += f" [{sum(not s.ok for s in group)} failed]"
    return text


def ratio(samples: list[Sample], step: str, over: str) -> str:
    a, b = cell_values(samples, "cas-enc", step), cell_values(samples, over, step)
    if a is None or b is None or not b[0] or not b[1]:
        return "–"
    return f"{a[0] / b[0]:.2f}× ({a[1] / b[1]:.2f}×)"


def store_mb(samples: list[Sample], config: str) -> float | None:
    sizes = [s.store_bytes for s in sorted(samples, key=lambda s: s.run)
             if s.config == config and s.step == "backup" and s.store_bytes]
    return sizes[0] / MB if sizes else None


def table(samples: list[Sample], configs: list[str]) -> str:
    head = ["step"] + [TITLES[c] for c in configs] + ["enc/plain", "enc/borg-repokey"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for step in STEPS:
        if not any(s.step == step for s in samples):
            continue
        cells = [cell(samples, c, step) for c in configs]
        lines.append(f"| {STEP_TITLES[step]} | " + " | ".join(cells) + " | "
                     f"{ratio(samples, step, 'cas-plain')} | "
                     f"{ratio(samples, step, 'borg-repokey')} |")
    sizes = [store_mb(samples, c) for c in configs]
    enc, plain, borg = (store_mb(samples, c) for c in ("cas-enc", "cas-plain", "borg-repokey"))
    lines.append("| store MB after the first snapshot | "
                 + " | ".join("–" if v is None else f"{v:,.1f}" for v in sizes) + " | "
                 + (f"{enc / plain:.3f}×" if enc and plain else "–") + " | "
                 + (f"{enc / borg:.3f}×" if enc and borg else "–") + " |")
    return "\n".join(lines)


def unlock_lines(samples: list[Sample], kdf: dict) -> list[str]:
    lines = []
    enc, plain = cell_values(samples, "cas-enc", "log"), cell_values(samples, "cas-plain", "log")
    if enc and plain:
        lines.append(f"unlock cost: `cas log` {enc[0]:.3f} s encrypted - {plain[0]:.3f} s plain"
                     f" = {enc[0] - plain[0]:.3f} s wall ({enc[1] - plain[1]:.3f} s CPU)")
    if "error" in kdf:
        lines.append(f"Argon2id alone: FAILED ({kdf['error']})")
    elif kdf:
        p = kdf["kdf"]
        lines.append(f"Argon2id alone ({p['memory_kib'] // 1024} MiB, {p['iterations']} passes,"
                     f" {p['lanes']} lanes; median of {len(kdf['runs'])}): "
                     f"{kdf['wall_s']:.3f} s wall, {kdf['cpu_s']:.3f} s CPU")
    return lines


def print_report(samples: list[Sample], configs: list[str], kdf: dict, meta: dict,
                 notes: list[str]) -> None:
    c = meta["corpus"]
    print(f"\ncorpus: {c['path']} ({c['files']:,} files, {c['bytes'] / MB:,.1f} MB, fs {c['fs']});"
          f" work: {meta['work']['path']} (fs {meta['work']['fs']}); median of "
          f"{meta['repeat']} runs; cells: wall s (user+sys CPU s); ratios: wall (CPU)\n")
    print(table(samples, configs))
    print("\n‡ another program used CPU during at least one sample of this cell"
          " (see --json for each sample's other_user_s).")
    for line in unlock_lines(samples, kdf) + [f"note: {n}" for n in notes]:
        print(line)
    for s in samples:
        if s.check and s.check != "ok" and not s.check.startswith("ok:"):
            print(f"restore check {s.config} run {s.run}: {s.check}")


# --------------------------------------------------------------------------
# CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--work", type=Path, required=True,
                    help="stores, restores and logs go here (run once on tmpfs, once on ext4)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--corpus-to-tmpfs", action="store_true",
                    help=f"copy the corpus to {TMPFS} first and back that up (removed after)")
    ap.add_argument("--only", default=",".join(CONFIGS), help=f"subset of {','.join(CONFIGS)}")
    ap.add_argument("--log-runs", type=int, default=5, help="`cas log` samples per run")
    ap.add_argument("--kdf-runs", type=int, default=10, help="Argon2id samples")
    ap.add_argument("--quiet-wait", type=float, default=0, metavar="SECONDS",
                    help="before each run wait up to this long for a quiet machine")
    ap.add_argument("--json", type=Path, help="write every sample and the summary here")
    ap.add_argument("--logs", type=Path, help="each command's output (default WORK/logs)")
    ap.add_argument("--cas", default=DEFAULT_CAS, help="cas command (default %(default)s)")
    ap.add_argument("--python", default=DEFAULT_PYTHON,
                    help="interpreter that imports cas, for Argon2id (default %(default)s)")
    ap.add_argument("--keep", action="store_true", help="keep stores (not restores)")
    args = ap.parse_args(argv)
    args.only = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = sorted(set(args.only) - set(CONFIGS))
    if unknown:
        ap.error(f"unknown configuration(s): {', '.join(unknown)}")
    if args.repeat < 1 or args.log_runs < 1 or args.kdf_runs < 1:
        ap.error("--repeat, --log-runs and --kdf-runs must be >= 1")
    args.corpus, args.work = args.corpus.resolve(), args.work.resolve()
    args.logs = (args.logs or args.work / "logs").resolve()
    if not args.corpus.is_dir():
        ap.error(f"corpus not found: {args.corpus}")
    if args.work.is_relative_to(args.corpus) or args.corpus.is_relative_to(args.work):
        ap.error("--work and --corpus must not contain each other")
    python = Path(args.python)
    args.python = str(python if python.is_absolute() else REPO_ROOT / python)
    return args


def meta_for(args: argparse.Namespace, corpus: Path, cas: str) -> dict:
    info = scan_corpus(corpus)
    return {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "corpus": {"path": str(corpus), "source": str(args.corpus), "files": info.files,
                   "bytes": info.bytes, "fs": fs_type(corpus)},
        "work": {"path": str(args.work), "fs": fs_type(args.work)},
        "repeat": args.repeat,
        "machine": {"cpus": os.cpu_count(), "kernel": os.uname().release,
                    "python": sys.version.split()[0], "mem_total_kb": mem_total_kb()},
        "versions": {"cas": first_line(cas.split() + ["--version"]),
                     "borg": first_line(["borg", "--version"]),
                     "restic": first_line(["restic", "version"])},
        "repo": repo_state(),
    }


def copy_corpus(source: Path) -> Path:
    target = TMPFS / "cas-bench-encrypted-corpus"
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run(["cp", "-a", str(source), str(target)], check=True)
    return target


def run_all(bench: Bench, configs: list[Config], notes: list[str]) -> None:
    for run in range(1, bench.args.repeat + 1):
        k = (run - 1) % len(configs)
        for cfg in configs[k:] + configs[:k]:
            if bench.args.quiet_wait > 0:
                wait_quiet(bench.args.quiet_wait, notes)
            say(bench.one_run(cfg, run), run, cfg.name)


def write_json(path: Path, meta: dict, commands: dict, samples: list[Sample], kdf: dict,
               notes: list[str], configs: list[str]) -> None:
    doc = {"meta": meta, "commands": commands, "table": table(samples, configs),
           "unlock": unlock_lines(samples, kdf), "kdf": kdf, "notes": notes,
           "samples": [{**asdict(s), "disturbed": s.disturbed} for s in samples]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cas, why = resolve_cas(args.cas)
    if cas is None:
        sys.exit(f"error: {why}")
    # SIGTERM unwinds like Ctrl-C: the running command is killed (the
    # launcher's process group) and the finally blocks clear the targets
    signal.signal(signal.SIGTERM, interrupted)
    args.work.mkdir(parents=True, exist_ok=True)
    args.logs.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus
    try:
        if args.corpus_to_tmpfs:
            corpus = copy_corpus(args.corpus)
        return measure(args, corpus, cas)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        return 130
    finally:
        if corpus != args.corpus:
            shutil.rmtree(corpus, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(args.work / "runs", ignore_errors=True)
            with contextlib.suppress(OSError):
                args.work.rmdir()  # only if empty (logs went elsewhere)


def measure(args: argparse.Namespace, corpus: Path, cas: str) -> int:
    configs = make_configs(args.only, cas)
    names = [c.name for c in configs]
    notes: list[str] = []
    meta = meta_for(args, corpus, cas)
    if shutil.disk_usage(args.work).free < 2.5 * meta["corpus"]["bytes"]:
        notes.append(f"less than 2.5x the corpus free in {args.work}")
    commands = {c.name: script_for(c, args.work, corpus, args.log_runs) for c in configs}
    print("# commands of run 1 (each timed one runs as `bash -o pipefail -c COMMAND`; "
          f"logs in {args.logs})\n")
    for lines in commands.values():
        print("\n".join(lines) + "\n")
    print(f"# Argon2id alone: {args.python} -c '<kdf(b\"bench\", salt, DEFAULT_KDF)>' "
          f"(x{args.kdf_runs}, one process)\n", flush=True)
    read_tree(corpus)
    bench = Bench(args, corpus, list_tree(corpus, hashes=True))
    run_all(bench, configs, notes)
    kdf = time_kdf(args.python, args.kdf_runs)
    print_report(bench.samples, names, kdf, meta, notes)
    if args.json:
        write_json(args.json, meta, commands, bench.samples, kdf, notes, names)
        print(f"\njson: {args.json}")
    return 1 if any(not s.ok for s in bench.samples) or "error" in kdf else 0


if __name__ == "__main__":
    sys.exit(main())
