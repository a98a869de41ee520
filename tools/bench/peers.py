#!/usr/bin/env python3
"""Time `cas` and its peers (b3sum, tar, restic, borg) over the same corpus.

Usage::

    python3 tools/bench/peers.py --corpus DIR --work DIR [--repeat 3]
        [--only b3sum,tar,restic,borg,cas] [--json OUT] [--cas "CMD"] [--keep]

For every tool, each run gets a fresh target under ``WORK/runs/<tool>-<run>``
(repository, store or tar file) and executes the tool's steps in order:

    b3sum   hash     find CORPUS -type f -print0 | xargs -0 b3sum --num-threads 2
    tar     backup   tar -cf TARGET/corpus.tar -C CORPUS .
    restic  init     restic init --repo R          (RESTIC_PASSWORD=bench)
            backup   restic backup --repo R CORPUS
            verify   restic check --read-data --repo R
    borg    init     borg init --encryption none R
            backup   borg create --compression none R::first CORPUS
            verify   borg check --verify-data R
    cas     init     cas --store S init
            backup   cas --store S add CORPUS > /dev/null
            verify   cas --store S verify --full

Each command runs as ``bash -o pipefail -c COMMAND``; the harness reaps it
with ``os.wait4`` and reports wall time (perf_counter around spawn and reap),
user+sys CPU time of the whole process tree (waited-for descendants are
included by the kernel) and the peak RSS of the largest process in the tree
(``ru_maxrss``; it counts mapped file pages too, so b3sum, which mmaps
large files, shows roughly the size of the largest file). Caches of restic and borg are placed inside the run's target
so that runs do not share state. The page cache cannot be dropped, so the
corpus is read (untimed) before every step that reads it and every tool sees
a warm cache: borg drops the files it has read from the page cache
(``posix_fadvise(DONTNEED)``), so reading it once at the start left the tool
after borg reading from disk;
``sync`` is called (untimed) before each step so that write-back left over
from a previous step is not billed to the next one.

Output: the exact commands (as a runnable script for run 1), a markdown table
of medians over ``--repeat`` runs (wall, CPU, peak RSS, store size after the
first backup, wall time relative to borg for the same step) and, with
``--json``, every individual run. Stdout/stderr of each command goes to
``WORK/logs/``. This is a measuring tool only: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CAS = ".venv/bin/cas"
TOOL_ORDER = ("b3sum", "tar", "restic", "borg", "cas")
STEP_ORDER = ("hash", "init", "backup", "verify")
BASELINE_TOOL = "borg"
# steps with no borg counterpart are compared with this borg step instead
BASELINE_STEP_FOR = {"hash": "backup"}
MB = 1_000_000


# --------------------------------------------------------------------------
# data model


@dataclass
class Step:
    """One timed command of one run."""

    tool: str
    step: str
    command: str  # exact shell text, run with `bash -o pipefail -c`
    measure: Path | None = None  # `du -sb` this path after the step (store size)


@dataclass
class ToolPlan:
    """How to run one tool: per-run steps (given the run's fresh target dir),
    environment variables, and an optional post-run sanity check."""

    name: str
    steps: Callable[[Path], list[Step]]
    env: Callable[[Path], dict[str, str]] = lambda target: {}
    check: Callable[[Path], str | None] = lambda target: None


@dataclass
class Sample:
    tool: str
    step: str
    run: int
    command: str
    env: dict[str, str]
    wall_s: float
    user_s: float
    sys_s: float
    maxrss_kb: int
    returncode: int
    store_bytes: int | None
    log: str
    error: str | None = None

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.error is None


@dataclass
class Row:
    """Medians over the runs of one (tool, step)."""

    tool: str
    step: str
    runs: int
    wall_s: float | None
    cpu_s: float | None
    peak_rss_mb: float | None
    store_mb: float | None
    vs_borg: float | None = None
    failed: str | None = None


@dataclass
class Corpus:
    path: Path
    files: int
    bytes: int
    warmup_s: float = 0.0


@dataclass
class Report:
    meta: dict
    commands: dict[str, list[str]] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------
# tool plans


def q(p: Path | str) -> str:
    return shlex.quote(str(p))


def b3sum_plan(corpus: Corpus) -> ToolPlan:
    def steps(t: Path) -> list[Step]:
        return [Step("b3sum", "hash",
                     f"find {q(corpus.path)} -type f -print0 | xargs -0 b3sum --num-threads 2"
                     f" > {q(t / 'b3sums.txt')}")]

    def check(t: Path) -> str | None:
        with open(t / "b3sums.txt", "rb") as f:
            lines = sum(1 for _ in f)
        if lines != corpus.files:
            return f"b3sum hashed {lines} files, corpus has {corpus.files}"
        return None

    return ToolPlan("b3sum", steps, check=check)


def tar_plan(corpus: Corpus) -> ToolPlan:
    def steps(t: Path) -> list[Step]:
        tar = t / "corpus.tar"
        return [Step("tar", "backup", f"tar -cf {q(tar)} -C {q(corpus.path)} .", measure=tar)]

    return ToolPlan("tar", steps)


def restic_plan(corpus: Corpus) -> ToolPlan:
    def steps(t: Path) -> list[Step]:
        repo = q(t / "repo")
        return [
            Step("restic", "init", f"restic init --repo {repo}"),
            Step("restic", "backup", f"restic backup --repo {repo} {q(corpus.path)}",
                 measure=t / "repo"),
            Step("restic", "verify", f"restic check --read-data --repo {repo}"),
        ]

    def env(t: Path) -> dict[str, str]:
        return {"RESTIC_PASSWORD": "bench", "RESTIC_CACHE_DIR": str(t / "cache")}

    return ToolPlan("restic", steps, env=env)


def borg_plan(corpus: Corpus) -> ToolPlan:
    def steps(t: Path) -> list[Step]:
        repo = q(t / "repo")
        return [
            Step("borg", "init", f"borg init --encryption none {repo}"),
            Step("borg", "backup", f"borg create --compression none {repo}::first"
                 f" {q(corpus.path)}", measure=t / "repo"),
            Step("borg", "verify", f"borg check --verify-data {repo}"),
        ]

    def env(t: Path) -> dict[str, str]:
        return {"BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
                "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
                "BORG_BASE_DIR": str(t / "borg-home")}

    return ToolPlan("borg", steps, env=env)


def cas_plan(corpus: Corpus, cas: str) -> ToolPlan:
    def steps(t: Path) -> list[Step]:
        store = q(t / "store")
        return [
            Step("cas", "init", f"{cas} --store {store} init"),
            Step("cas", "backup", f"{cas} --store {store} add {q(corpus.path)} > /dev/null",
                 measure=t / "store"),
            Step("cas", "verify", f"{cas} --store {store} verify --full"),
        ]

    return ToolPlan("cas", steps)


def resolve_cas(spec: str) -> tuple[str | None, str]:
    """Shell text for the cas command, or None and the reason it is missing."""
    argv = shlex.split(spec)
    if not argv:
        return None, "empty --cas command"
    exe = argv[0]
    if "/" in exe:
        path = Path(exe) if Path(exe).is_absolute() else REPO_ROOT / exe
        if not (path.is_file() and os.access(path, os.X_OK)):
            return None, f"cas executable not found: {path}"
        argv[0] = str(path)
    elif shutil.which(exe) is None:
        return None, f"cas executable not on PATH: {exe}"
    return shlex.join(argv), ""


def build_plans(corpus: Corpus, only: list[str], cas_spec: str,
                notes: list[str]) -> list[ToolPlan]:
    plans = []
    for name in only:
        if name == "cas":
            cas, why = resolve_cas(cas_spec)
            if cas is None:
                notes.append(f"cas rows skipped: {why}")
                continue
            plans.append(cas_plan(corpus, cas))
        else:
            plans.append({"b3sum": b3sum_plan, "tar": tar_plan, "restic": restic_plan,
                          "borg": borg_plan}[name](corpus))
    return plans


# --------------------------------------------------------------------------
# measuring


# Linux starts a child's ru_maxrss at its parent's peak RSS (exec records the
# old address space's high-water mark), so with a direct child every row's
# peak RSS is at least this harness's own. With launcher=True, run_timed starts
# this small helper, which spawns the command, times and reaps it and reports
# over a pipe (fd argv[1]): the floor is then the helper's own few MB.
_LAUNCHER = """
import os, sys, time
t = time.perf_counter()
pid = os.posix_spawn("/bin/bash", ["bash", "-o", "pipefail", "-c", sys.argv[2]], os.environ)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t
os.write(int(sys.argv[1]), repr((wall, os.waitstatus_to_exitcode(status), tuple(ru))).encode())
"""


def run_timed(command: str, env: dict[str, str], log: Path,
              launcher: bool = False) -> tuple[float, resource.struct_rusage, int]:
    """Run one shell command; wall seconds, its rusage (whole tree), exit code."""
    if launcher:
        return _run_launched(command, env, log)
    with open(log, "wb") as out:
        out.write(f"$ {command}\n".encode())
        out.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen(["bash", "-o", "pipefail", "-c", command],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **env})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return wall, usage, proc.returncode


def _run_launched(command: str, env: dict[str, str],
                  log: Path) -> tuple[float, resource.struct_rusage, int]:
    read, write = os.pipe()
    try:
        with open(log, "wb") as out:
            out.write(f"$ {command}\n".encode())
            out.flush()
            proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _LAUNCHER, str(write),
                                     command], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env={**os.environ, **env},
                                    pass_fds=(write,), start_new_session=True)
            os.close(write)
            write = -1
            try:
                with os.fdopen(read, "rb") as r:
                    read = -1
                    report = r.read()
                proc.wait()
            except BaseException:  # interrupted: take the command's whole tree down
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
    finally:
        for fd in (read, write):
            if fd >= 0:
                os.close(fd)
    if proc.returncode != 0 or not report:
        raise RuntimeError(f"launcher failed (exit {proc.returncode}); see {log}")
    wall, rc, ru = ast.literal_eval(report.decode())
    return wall, resource.struct_rusage(ru), rc


def du_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[0])


def run_tool(plan: ToolPlan, run: int, work: Path, keep: bool,
             corpus: Path | None = None) -> list[Sample]:
    target = work / "runs" / f"{plan.name}-{run}"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    env = plan.env(target)
    samples = []
    try:
        for step in plan.steps(target):
            if corpus is not None and step.step in ("hash", "backup"):
                read_tree(corpus)  # untimed: the step before may have evicted it
            os.sync()  # untimed: flush write-back left over from earlier steps
            log = work / "logs" / f"{plan.name}-run{run}-{step.step}.log"
            wall, usage, rc = run_timed(step.command, env, log)
            sample = Sample(plan.name, step.step, run, step.command, env, wall,
                            usage.ru_utime, usage.ru_stime, usage.ru_maxrss, rc, None, str(log))
            if rc == 0 and step.measure is not None:
                sample.store_bytes = du_bytes(step.measure)
            samples.append(sample)
            if rc != 0:
                sample.error = f"exit {rc}; see {log}"
                break
        if samples and samples[-1].ok:
            samples[-1].error = plan.check(target)
    finally:
        if not keep:
            shutil.rmtree(target, ignore_errors=True)
    return samples


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(samples: list[Sample]) -> list[Row]:
    rows = []
    keys = sorted({(s.tool, s.step) for s in samples},
                  key=lambda k: (TOOL_ORDER.index(k[0]), STEP_ORDER.index(k[1])))
    for tool, step in keys:
        group = [s for s in samples if (s.tool, s.step) == (tool, step)]
        good = [s for s in group if s.ok]
        bad = [s for s in group if not s.ok]
        stores = [s.store_bytes for s in sorted(good, key=lambda s: s.run)
                  if s.store_bytes is not None]
        rows.append(Row(
            tool, step, len(good),
            wall_s=median([s.wall_s for s in good]),
            cpu_s=median([s.cpu_s for s in good]),
            peak_rss_mb=median([s.maxrss_kb * 1024 / MB for s in good]),
            store_mb=stores[0] / MB if stores else None,  # after the first backup
            failed=bad[0].error if bad else None,
        ))
    baseline = {r.step: r.wall_s for r in rows if r.tool == BASELINE_TOOL and r.wall_s}
    for r in rows:
        base = baseline.get(BASELINE_STEP_FOR.get(r.step, r.step))
        if base and r.wall_s is not None:
            r.vs_borg = r.wall_s / base
    return rows


# --------------------------------------------------------------------------
# corpus, environment, output


def scan_corpus(path: Path) -> Corpus:
    files = nbytes = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            st = os.lstat(os.path.join(dirpath, name))
            if not os.path.islink(os.path.join(dirpath, name)):
                files += 1
                nbytes += st.st_size
    return Corpus(path, files, nbytes)


def read_tree(path: Path) -> None:
    """Read every file under ``path`` once, into the page cache."""
    buf = bytearray(1 << 20)
    for dirpath, _, names in os.walk(path):
        for name in names:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                continue
            with open(p, "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass


def warm_up(corpus: Corpus) -> None:
    """Read every file once so that all tools start from a warm page cache."""
    t0 = time.perf_counter()
    read_tree(corpus.path)
    corpus.warmup_s = time.perf_counter() - t0


def first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unavailable"


def fs_type(path: Path) -> str:
    out = subprocess.run(["df", "--output=fstype", str(path)], capture_output=True, text=True)
    words = out.stdout.split()
    return words[-1] if out.returncode == 0 and len(words) >= 2 else "unknown"


def machine_meta(args: argparse.Namespace, corpus: Corpus, plans: list[ToolPlan]) -> dict:
    versions = {"b3sum": ["b3sum", "--version"], "tar": ["tar", "--version"],
                "restic": ["restic", "version"], "borg": ["borg", "--version"]}
    return {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "corpus": {"path": str(corpus.path), "files": corpus.files, "bytes": corpus.bytes,
                   "fs": fs_type(corpus.path), "warmup_s": round(corpus.warmup_s, 3)},
        "work": {"path": str(args.work), "fs": fs_type(args.work)},
        "repeat": args.repeat,
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                    "python": platform.python_version(),
                    "mem_total_kb": mem_total_kb()},
        "versions": {p.name: first_line(versions[p.name]) for p in plans if p.name in versions},
    }


def mem_total_kb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def script_for(plan: ToolPlan, work: Path) -> list[str]:
    target = work / "runs" / f"{plan.name}-1"
    lines = [f"# {plan.name} (run 1; run N uses {plan.name}-N; fresh target each run)"]
    env = plan.env(target)
    if env:
        lines.append("export " + " ".join(f"{k}={q(v)}" for k, v in env.items()))
    lines += [s.command for s in plan.steps(target)]
    return lines


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{suffix}"


def markdown_table(rows: list[Row]) -> str:
    head = ["tool", "step", "median wall s", "CPU s (user+sys)", "peak RSS MB",
            "store MB", "wall vs borg"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * 5) + "|"]
    for r in rows:
        if r.failed and r.wall_s is None:
            cells = [r.tool, r.step, f"FAILED: {r.failed}", "", "", "", ""]
        else:
            ratio = fmt(r.vs_borg, ".2f", "x")
            if r.vs_borg is not None and r.step in BASELINE_STEP_FOR:
                ratio += " †"
            cells = [r.tool, r.step, fmt(r.wall_s, ".2f"), fmt(r.cpu_s, ".2f"),
                     fmt(r.peak_rss_mb, ".1f"), fmt(r.store_mb, ".1f"), ratio]
            if r.failed:
                cells[1] += f" ({r.failed})"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_report(report: Report) -> None:
    c = report.meta["corpus"]
    print(f"\ncorpus: {c['path']} ({c['files']:,} files, {c['bytes'] / MB:,.1f} MB, "
          f"fs {c['fs']}); work: {report.meta['work']['path']} (fs {report.meta['work']['fs']});"
          f" runs per step: {report.meta['repeat']} (median reported)\n")
    print(markdown_table(report.rows))
    print("\nstore MB: du -sb of the repository/store/tar file after the first run's backup."
          "\n† b3sum hash is compared with borg backup (the cost floor of reading and"
          " hashing the corpus).")
    for note in report.notes:
        print(f"note: {note}")


def check_common_args(ap: argparse.ArgumentParser, args: argparse.Namespace,
                      known) -> argparse.Namespace:
    """--only, --repeat, --corpus and --work as this script and history.py take them."""
    args.only = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = sorted(set(args.only) - set(known))
    if unknown:
        ap.error(f"unknown tool(s) in --only: {', '.join(unknown)}")
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    args.corpus = args.corpus.resolve()
    args.work = args.work.resolve()
    if not args.corpus.is_dir():
        ap.error(f"corpus not found: {args.corpus}")
    return args


def write_json(path: Path, report: Report, run_extra=lambda s: {}, **extra) -> None:
    """Every run of a report as JSON; ``run_extra(sample)`` and ``extra`` add
    fields for reports that measure more (history.py)."""
    doc = {
        "meta": report.meta,
        "commands": report.commands,
        "summary": [dataclasses.asdict(r) for r in report.rows],
        "runs": [{**dataclasses.asdict(s), "cpu_s": s.cpu_s, **run_extra(s)}
                 for s in report.samples],
        "notes": report.notes,
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


# --------------------------------------------------------------------------
# CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True,
                    help="scratch dir for targets and logs (ext4, tmpfs, ...)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default=",".join(TOOL_ORDER),
                    help=f"comma-separated subset of {','.join(TOOL_ORDER)}")
    ap.add_argument("--json", type=Path, help="write every run and the summary here")
    ap.add_argument("--cas", default=DEFAULT_CAS,
                    help=f"cas command (default {DEFAULT_CAS}, relative to the repo root)")
    ap.add_argument("--keep", action="store_true", help="keep run targets (default: delete)")
    args = check_common_args(ap, ap.parse_args(argv), TOOL_ORDER)
    if args.work.is_relative_to(args.corpus) or args.corpus.is_relative_to(args.work):
        ap.error("--work and --corpus must not contain each other")
    return args


def check_space(work: Path, corpus: Corpus, notes: list[str]) -> None:
    free = shutil.disk_usage(work).free
    if free < 1.3 * corpus.bytes:
        notes.append(f"only {free / MB:,.0f} MB free in {work}; a run needs about "
                     f"{1.3 * corpus.bytes / MB:,.0f} MB")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    (args.work / "logs").mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    corpus = scan_corpus(args.corpus)
    check_space(args.work, corpus, notes)
    plans = build_plans(corpus, sorted(args.only, key=TOOL_ORDER.index), args.cas, notes)

    print("commands (each run as `bash -o pipefail -c COMMAND`; logs in "
          f"{args.work / 'logs'}):\n")
    commands = {p.name: script_for(p, args.work) for p in plans}
    for lines in commands.values():
        print("\n".join(lines) + "\n")

    warm_up(corpus)
    print(f"warm-up: read {corpus.files:,} files, {corpus.bytes / MB:,.1f} MB in "
          f"{corpus.warmup_s:.1f} s", flush=True)
    report = Report(machine_meta(args, corpus, plans), commands, notes=notes)

    for plan in plans:
        for run in range(1, args.repeat + 1):
            samples = run_tool(plan, run, args.work, args.keep, corpus.path)
            report.samples += samples
            status = ", ".join(f"{s.step} {s.wall_s:.2f}s" + ("" if s.ok else " FAILED")
                               for s in samples)
            print(f"  {plan.name} run {run}: {status}", flush=True)
            if any(not s.ok for s in samples):
                print(f"    error: {next(s.error for s in samples if not s.ok)}", flush=True)
        if args.json:
            report.rows = summarize(report.samples)
            write_json(args.json, report)  # partial results survive a crash

    report.rows = summarize(report.samples)
    print_report(report)
    if args.json:
        write_json(args.json, report)
        print(f"\njson: {args.json}")
    return 1 if any(r.failed for r in report.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
