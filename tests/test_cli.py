import json
import os
import shutil
import subprocess

import pytest

from .conftest import DATA, cas_process, write


@pytest.fixture
def tree(tmp_path, cas):
    shutil.copytree(DATA, tmp_path / "data")
    assert cas("init").code == 0
    return tmp_path


def test_add_prints_b3sum_lines_and_cat_gives_the_bytes_back(tree, cas):
    result = cas("add", "data")
    assert result.code == 0, result.err
    lines = result.text.splitlines()
    files = sorted(p for p in (tree / "data").rglob("*") if p.is_file())
    assert len(lines) == len(files)
    for line in lines:
        oid, path = line.split("  ", 1)
        back = cas("cat", oid[:8])
        assert back.code == 0
        assert back.out == (tree / path).read_bytes()


@pytest.mark.skipif(shutil.which("b3sum") is None, reason="b3sum not installed")
def test_add_output_equals_b3sum_output(tree, cas):
    ours = cas("add", "data/db", "data/events").out
    files = sorted(str(p.relative_to(tree)) for d in ("data/db", "data/events")
                   for p in (tree / d).iterdir())
    theirs = subprocess.run(["b3sum", *files], cwd=tree, capture_output=True, check=True).stdout
    assert ours == theirs


def test_cat_to_a_file(tree, cas):
    oid = cas("add", "data/db/state.db").text.split()[0]
    assert cas("cat", oid, "-o", "out.db").code == 0
    assert (tree / "out.db").read_bytes() == (tree / "data/db/state.db").read_bytes()


def test_json_outputs_parse(tree, cas):
    added = json.loads(cas("add", "--json", "data").out)
    assert added["summary"]["files"] == len(added["files"]) > 10
    objects = json.loads(cas("objects", "--json").out)
    # Databases and logs are chunked: their chunks are objects too.
    assert {f["id"] for f in added["files"]} <= {o["id"] for o in objects}
    stats = json.loads(cas("stats", "--json").out)
    assert stats["objects"] == len(objects)
    assert stats["unique_bytes"] == sum(o["size"] for o in objects if o["encoding"] != "chunked")
    assert 0 < stats["compression_ratio"] < 1
    report = json.loads(cas("verify", "--full", "--json").out)
    assert report["ok"] and report["objects"] == len(objects)


def test_commands_find_the_store_from_a_subdirectory(tree, cas):
    assert cas("add", "state.db", cwd=tree / "data" / "db").code == 0
    assert "1 file," in cas("add", "state.db", cwd=tree / "data" / "db").err


def test_store_elsewhere_by_option_and_environment(tmp_path, cas, monkeypatch):
    ext = tmp_path / "external"
    assert cas("--store", str(ext), "init").code == 0
    write(tmp_path / "w" / "f.txt", b"hello")
    assert cas("--store", str(ext), "add", "f.txt", cwd=tmp_path / "w").code == 0
    monkeypatch.setenv("CAS_STORE", str(ext))
    assert cas("objects", cwd=tmp_path / "w").text.count("\n") == 1


def test_no_store_is_a_clear_error(tmp_path, cas):
    r = cas("stats")
    assert r.code == 2 and "no cas store found" in r.err and "cas init" in r.err


def test_every_command_has_help(cas):
    for cmd in ("init", "add", "cat", "objects", "stats", "verify", "index"):
        r = cas(cmd, "--help")
        assert r.code == 0 and len(r.text) > 80


def test_a_usage_error_exits_2_without_a_traceback(tmp_path):
    r = cas_process("frobnicate", cwd=tmp_path)
    assert r.returncode == 2 and b"Traceback" not in r.stderr
    r = cas_process("cat", cwd=tmp_path)
    assert r.returncode == 2 and b"Traceback" not in r.stderr


def test_the_demo_runs(tmp_path):
    repo = DATA.parent
    r = subprocess.run([os.sys.executable, str(repo / "tools" / "demo.py"), "--work", str(tmp_path / "demo")],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    assert b"verify --full" in r.stdout and b": ok" in r.stdout + r.stderr


def test_every_command_is_found_by_its_name():
    # Commands are imported on demand from a name -> module map; a command
    # added to a module but not to the map would be unreachable.
    import importlib
    import pkgutil

    import cas.cli
    from cas.cli.main import COMMAND_MODULES, cli
    for info in pkgutil.iter_modules(cas.cli.__path__):
        if not info.name.startswith("cmd_"):
            continue
        module = importlib.import_module(f"cas.cli.{info.name}")
        for command in getattr(module, "commands", None) or [module.command]:
            assert COMMAND_MODULES.get(command.name) == info.name, command.name
            assert cli.get_command(None, command.name) is command
