#!/usr/bin/env python3
"""Set up the project's virtual environment and run the demo or the tests.

    python3 tools/run.py demo    # the demo on data/
    python3 tools/run.py test    # ruff and mypy on cas/, the whole test suite, then
                                 # a part of it again with every store encrypted

Needs only Python 3.11+. The environment lives in .venv/ and is
reinstalled whenever pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"
STAMP = VENV / ".cas-installed"
PYTHON = VENV / "bin" / "python"
# Run a second time with every store encrypted (tests/conftest.py,
# --encrypted-stores): code that takes a store's file names for ids or opens
# a store without its passphrase fails only there. Chosen to reach every
# command (CLI, snapshots, restore, history, models, gc/verify/repair, watch)
# in under three minutes on two cores; the slow crash, purge and retention
# fault tests are left to the plain pass.
ENCRYPTED_PASS = [
    "tests/test_cli.py", "tests/test_cli_everyday.py", "tests/test_cli_finish.py",
    "tests/test_completion.py", "tests/test_paths_cwd.py",
    "tests/test_snapshots.py", "tests/test_snapshot_paths.py", "tests/test_treelinks.py",
    "tests/test_restore.py", "tests/test_restore_overwrite.py", "tests/test_worktree_state.py",
    "tests/test_restore_trust.py", "tests/test_scan_targets.py", "tests/test_statcache.py",
    "tests/test_log_features.py", "tests/test_timespec.py", "tests/test_diff_features.py",
    "tests/test_history_trust.py", "tests/test_timeline.py", "tests/test_retention.py",
    "tests/test_models_everyday.py", "tests/test_models.py", "tests/test_models_trust.py",
    "tests/test_gc.py", "tests/test_repair.py", "tests/test_bad_input.py", "tests/test_stats_figures.py",
    "tests/test_json_everywhere.py", "tests/test_watch_schedule.py", "tests/test_watch_trouble.py",
    "tests/test_watch.py::test_editor_saves_and_new_files_are_snapshotted",
    "tests/test_watch.py::test_one_watcher_per_tree_and_status",
    "tests/test_watch.py::test_sigkill_then_restart_loses_nothing",
    "tests/test_watch.py::test_sigterm_writes_a_final_snapshot",
]


def ensure_env() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036  # run by whatever python3 is first on PATH
        sys.exit("cas needs Python 3.11 or newer")
    wanted = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted and PYTHON.exists():
        return
    print("setting up .venv (once) ...", file=sys.stderr, flush=True)
    if not PYTHON.exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{REPO}[test]"], check=True)
    STAMP.write_text(wanted)


def static_checks() -> int:
    """ruff (lint, complexity limits) and mypy (types) on cas/, each run
    whatever the other found; their output is printed as they run. Returns
    the first non-zero exit status, or 0 when both are clean."""
    bin_dir = VENV / "bin"
    failed = 0
    for check in (["ruff", "check", "--no-cache", "cas"], ["mypy", "cas"]):
        print("$", " ".join(check), flush=True)
        code = subprocess.call([str(bin_dir / check[0]), *check[1:]])
        if code != 0:
            print(f"{check[0]} failed (exit {code}): fix the findings above", file=sys.stderr, flush=True)
            failed = failed or code
    return failed


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("demo", "test"):
        sys.exit(__doc__)
    ensure_env()
    os.chdir(REPO)
    if sys.argv[1] == "demo":
        return subprocess.call([str(PYTHON), str(REPO / "tools" / "demo.py"), *sys.argv[2:]])
    code = static_checks()
    if code != 0:
        return code
    workers = min(2, os.cpu_count() or 1)
    code = subprocess.call([str(PYTHON), "-m", "pytest", "-n", str(workers), *sys.argv[2:]])
    if code != 0 or sys.argv[2:]:
        return code
    print("$ pytest --encrypted-stores (a subset: every command on encrypted stores)", flush=True)
    return subprocess.call([str(PYTHON), "-m", "pytest", "-n", str(workers), "--encrypted-stores",
                            *ENCRYPTED_PASS])


if __name__ == "__main__":
    sys.exit(main())
