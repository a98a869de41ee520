"""Every command that prints data takes --json, its output parses, and it
carries the figures the text output shows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest

from tests.test_cli_help import COMMANDS
from tests.test_models_everyday import make_model

# Commands that print no data of their own: the help, and cat, whose output
# is the file's bytes.
NO_DATA = {"cas", "cas help", "cas cat"}


def test_every_command_that_prints_data_takes_json():
    missing = [" ".join(path) for path, command in COMMANDS
               if not isinstance(command, click.Group) and " ".join(path) not in NO_DATA
               and not any("--json" in p.opts for p in command.params)]
    assert missing == []


@pytest.fixture
def tree(tmp_path: Path, cas, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    t = tmp_path / "tree"
    (t / "notes").mkdir(parents=True)
    (t / "notes" / "todo.md").write_text("todo\n")
    (t / "memory.db").write_bytes(b"db" * 1000)
    assert cas("init", cwd=t).code == 0
    assert cas("snapshot", "-m", "one", cwd=t).code == 0
    (t / "notes" / "ideas.md").write_text("idea\n")
    assert cas("snapshot", "-m", "two", cwd=t).code == 0
    assert cas("model", "import", str(make_model(tmp_path / "src", 1)), "--name", "tiny",
               cwd=t).code == 0
    return t


def doc(cas, tree: Path, *args: str, code: int = 0):
    r = cas(*args, "--json", cwd=tree)
    assert r.code == code, r.err
    return json.loads(r.out)


def text(cas, tree: Path, *args: str) -> str:
    r = cas(*args, cwd=tree)
    assert r.code == 0, r.err
    return r.text + r.err


def test_history_commands(cas, tree):
    log = doc(cas, tree, "log")
    assert len(log) == 2 and text(cas, tree, "log", "--oneline").count("\n") == 2
    show = doc(cas, tree, "show", "HEAD")
    assert f"{show['stats']['files']} files" in text(cas, tree, "show", "HEAD")
    ls = doc(cas, tree, "ls", "HEAD:notes")
    assert sorted(Path(e["path"]).name for e in ls) == ["ideas.md", "todo.md"]
    stats = doc(cas, tree, "stats", "HEAD")
    assert f"{stats['files']} files" in text(cas, tree, "stats", "HEAD")
    du = doc(cas, tree, "du")
    assert du["files"] == 3
    assert doc(cas, tree, "diff", "HEAD~1", "HEAD")
    assert doc(cas, tree, "status")["changes"] == []


def test_refs_and_policy(cas, tree):
    assert doc(cas, tree, "tag", "v1")["action"] == "created"
    assert [t["tag"] for t in doc(cas, tree, "tag")] == ["v1"]
    assert [b["branch"] for b in doc(cas, tree, "branch")] == ["main"]
    assert doc(cas, tree, "policy", "set", "--keep-last", "5")["branch"] == "main"
    shown = doc(cas, tree, "policy", "show")
    assert shown["main"] is not None
    assert doc(cas, tree, "policy", "clear")["removed"] is True
    forgot = doc(cas, tree, "forget", "--keep-last", "1", "--dry-run")
    assert len(forgot[0]["forgotten"]) == 1
    assert "would forget 1" in text(cas, tree, "forget", "--keep-last", "1", "--dry-run")


def test_store_commands(cas, tree, tmp_path):
    verify = doc(cas, tree, "verify", "--full")
    line = text(cas, tree, "verify", "--full")
    assert f"{verify['objects']} objects in {verify['snapshots']} snapshots" in line
    gc = doc(cas, tree, "gc", "--dry-run")
    assert f"would remove {gc['removed_objects']} object" in text(cas, tree, "gc", "--dry-run")
    objects = doc(cas, tree, "objects")
    assert len(objects) == verify["objects"]
    assert doc(cas, tree, "index", "rebuild")
    assert doc(cas, tree, "maintain", "--dry-run")
    report = doc(cas, tree, "report", "--html", str(tmp_path / "r.html"))
    said = text(cas, tree, "report", "--html", str(tmp_path / "r.html"))
    assert re.search(rf"\b{report['models']} model\b", said)
    assert doc(cas, tree, "watch", "--status", code=3) is not None


def test_restore_and_checkout(cas, tree, tmp_path):
    restored = doc(cas, tree, "restore", "HEAD", "--to", str(tmp_path / "out"))
    assert restored["files"] == 3
    assert doc(cas, tree, "checkout", "HEAD")["problems"] == []


def test_model_commands(cas, tree, tmp_path):
    ls = doc(cas, tree, "model", "ls")
    assert [m["name"] for m in ls["models"]] == ["tiny"]
    assert doc(cas, tree, "model", "show", "tiny")
    assert len(doc(cas, tree, "model", "log", "tiny")) == 1
    verified = doc(cas, tree, "model", "verify", "tiny")
    assert verified["ok"] is True
    assert f"{verified['files']} files" in text(cas, tree, "model", "verify", "tiny")
    assert doc(cas, tree, "model", "path", "tiny")["path"]
    exported = doc(cas, tree, "model", "export", "tiny", str(tmp_path / "exp"))
    assert exported["files"] == verified["files"] and exported["problems"] == []
    said = text(cas, tree, "model", "export", "tiny", str(tmp_path / "exp2"))
    assert f"{exported['files']} files" in said
    linked = doc(cas, tree, "model", "link", "tiny", "--hf-cache", str(tmp_path / "hub"))
    assert Path(linked["path"]).is_dir()
    assert doc(cas, tree, "model", "rm", "tiny") == {"model": "tiny", "removed_versions": 1}


def test_stores_commands(cas, tree):
    added = doc(cas, tree, "stores", "add", "here", str(tree))
    assert added["action"] == "registered" and added["path"].endswith(".cas")
    assert doc(cas, tree, "stores", "ls") == [{"name": "here", "path": added["path"]}]
    assert doc(cas, tree, "stores", "rm", "here")["action"] == "removed"
    assert "registered store" in text(cas, tree, "stores", "add", "again", str(tree))
