"""Shell completion through click's real protocol, in a subprocess, as bash runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_models_everyday import make_model


def complete(line: str, cwd: Path, env: dict | None = None) -> tuple[list[str], str]:
    """What ``cas`` offers for the last word of ``line`` (a trailing space
    asks for a new word), and what it wrote to stderr."""
    words = line.split()
    cword = len(words) if line.endswith(" ") else len(words) - 1
    full_env = {k: v for k, v in os.environ.items() if k != "CAS_STORE"}
    full_env.update({"_CAS_COMPLETE": "bash_complete", "COMP_WORDS": line,
                     "COMP_CWORD": str(cword), **(env or {})})
    r = subprocess.run([sys.executable, "-m", "cas.cli"], cwd=cwd, env=full_env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [line.split(",", 1)[1] for line in r.stdout.splitlines() if line], r.stderr


@pytest.fixture
def tree(tmp_path: Path, cas) -> Path:
    t = tmp_path / "tree"
    (t / "notes" / "drafts").mkdir(parents=True)
    (t / "notes" / "todo.md").write_text("todo\n")
    (t / "notes" / "drafts" / "a.md").write_text("a\n")
    (t / "memory.db").write_bytes(b"db")
    assert cas("init", cwd=t).code == 0
    assert cas("snapshot", "-m", "one", cwd=t).code == 0
    assert cas("tag", "v1", cwd=t).code == 0
    assert cas("branch", "experiment", cwd=t).code == 0
    assert cas("model", "import", str(make_model(tmp_path / "src", 1)), "--name", "tiny-coder",
               cwd=t).code == 0
    return t


def test_commands_and_subcommands_complete(tree):
    assert complete("cas snap", tree)[0] == ["snapshot"]
    assert set(complete("cas model ", tree)[0]) >= {"import", "ls", "show", "log", "rm"}


def test_refs_complete_branches_tags_and_head(tree):
    offered, err = complete("cas restore ", tree)
    assert set(offered) == {"HEAD", "main", "experiment", "v1"}
    assert err == ""
    assert complete("cas show ex", tree)[0] == ["experiment"]
    assert complete("cas tag ", tree)[0] == ["v1"]
    assert complete("cas branch e", tree)[0] == ["experiment"]


def test_paths_of_the_named_snapshot_complete(tree):
    assert complete("cas restore HEAD no", tree)[0] == ["notes/"]
    assert sorted(complete("cas restore HEAD notes/", tree)[0]) == ["notes/drafts/", "notes/todo.md"]
    # From a subdirectory, paths are relative to it, as the command reads them.
    assert sorted(complete("cas restore HEAD ", tree / "notes")[0]) == ["drafts/", "todo.md"]
    assert complete("cas checkout v1 mem", tree)[0] == ["memory.db"]
    # With --at no snapshot is named: the first word is already a path.
    assert complete("cas restore --at yesterday no", tree)[0] == ["notes/"]


def test_snap_colon_path_completes_inside_the_snapshot(tree):
    assert sorted(complete("cas ls HEAD:", tree)[0]) == ["HEAD:memory.db", "HEAD:notes/"]
    assert complete("cas ls v1:notes/d", tree)[0] == ["v1:notes/drafts/"]
    assert complete("cas cat HEAD:notes/t", tree)[0] == ["HEAD:notes/todo.md"]


def test_model_names_complete(tree):
    assert complete("cas model show ", tree)[0] == ["tiny-coder"]
    assert complete("cas model log ti", tree)[0] == ["tiny-coder"]


def test_no_store_a_bad_ref_or_a_locked_store_give_nothing_and_no_traceback(tree, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert complete("cas restore ", elsewhere) == ([], "")
    assert complete("cas restore nosuch ", tree) == ([], "")
    assert complete("cas ls nosuch:", tree) == ([], "")
    assert complete("cas ls HEAD:memory.db/", tree) == ([], "")
    # gc holds the exclusive lock: completion gives up at once, it does not wait.
    import fcntl
    with open(tree / ".cas" / "lock", "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        start = time.monotonic()
        assert complete("cas restore ", tree) == ([], "")
        assert time.monotonic() - start < 10
    # A tag naming a snapshot that is not there: no completions, no traceback.
    (tree / ".cas" / "refs" / "tags" / "ghost").write_text("ab" * 32 + "\n")
    assert complete("cas ls ghost:", tree) == ([], "")
    assert complete("cas restore ghost ", tree) == ([], "")


def test_store_option_is_honoured(tree, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    assert set(complete(f"cas --store {tree} tag ", other)[0]) == {"v1"}
    assert set(complete("cas tag ", other, {"CAS_STORE": str(tree)})[0]) == {"v1"}


def test_readme_gives_the_install_lines():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for line in ('eval "$(_CAS_COMPLETE=bash_source cas)"', 'eval "$(_CAS_COMPLETE=zsh_source cas)"',
                 "_CAS_COMPLETE=fish_source cas | source"):
        assert line in readme
