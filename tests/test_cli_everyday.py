"""Everyday commands say what they did and refuse what would surprise: typos
get the nearest command, 'cas help', init inside a tree, tags that move."""

import json

import click
import pytest

from .conftest import cas_process


@pytest.fixture
def root(tmp_path, cas):
    """A tree with two snapshots: (root, [older id, newer id])."""
    (tmp_path / "notes.txt").write_text("one\n")
    assert cas("init").code == 0
    ids = []
    for text in ("one\n", "two\n"):
        (tmp_path / "notes.txt").write_text(text)
        r = cas("-q", "snapshot")
        assert r.code == 0, r.err
        ids.append(r.text.strip())
    return tmp_path, ids


def _one_error_line(r) -> str:
    assert r.code == 2, r.err
    lines = r.err.splitlines()
    assert len(lines) == 1, r.err
    assert lines[0].startswith("cas: error: ")
    return lines[0]


@pytest.mark.parametrize("args, meant", [
    (("snaphot",), "snapshot"), (("stauts",), "status"), (("chekout",), "checkout"),
    (("model", "improt"), "import"), (("stores", "lss"), "ls"), (("index", "rebiuld"), "rebuild"),
    (("policy", "shwo"), "show"),
])
def test_a_typo_gets_the_nearest_command_in_one_line(cas, args, meant):
    line = _one_error_line(cas(*args))
    assert f"did you mean '{meant}'" in line
    assert f"'{args[-1]}' is not a cas" in line


def test_every_group_suggests_for_every_command_it_has(cas):
    # By class: each group's every command, with two neighbouring letters
    # swapped, is suggested back.
    from cas.cli.main import cli
    root_ctx = click.Context(cli, info_name="cas")
    groups = [((), cli, root_ctx)]
    for name in cli.list_commands(root_ctx):
        command = cli.get_command(root_ctx, name)
        if isinstance(command, click.Group):
            groups.append(((name,), command, click.Context(command, info_name=name,
                                                            parent=root_ctx)))
    assert len(groups) >= 4
    for prefix, group, ctx in groups:
        for name in group.list_commands(ctx):
            if len(name) < 4:
                continue
            typo = name[0] + name[2] + name[1] + name[3:]
            line = _one_error_line(cas(*prefix, typo))
            assert f"'{name}'" in line.split("did you mean", 1)[1], (prefix, typo, line)


def test_a_name_near_nothing_gets_no_suggestion_but_the_help_to_read(cas):
    line = _one_error_line(cas("frobnicate"))
    assert "did you mean" not in line and "'cas --help'" in line


def test_the_real_executable_says_it_in_one_line(tmp_path):
    r = cas_process("snaphot", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.decode().splitlines() == [
        "cas: error: 'snaphot' is not a cas command; did you mean 'snapshot'? (see 'cas --help')"]


@pytest.mark.parametrize("words", [(), ("log",), ("model",), ("model", "import"), ("tag",)])
def test_help_command_is_dash_dash_help(cas, words):
    via_help = cas("help", *words)
    via_option = cas(*words, "--help")
    assert via_help.code == via_option.code == 0
    assert via_help.out == via_option.out and via_help.out.startswith(b"Usage: cas")


def test_help_of_a_typo_suggests_and_help_of_a_plain_command_has_no_subcommands(cas):
    assert "did you mean 'snapshot'" in _one_error_line(cas("help", "snaphot"))
    assert "did you mean 'import'" in _one_error_line(cas("help", "model", "improt"))
    assert "no subcommand 'x'" in _one_error_line(cas("help", "log", "x"))


def test_init_inside_a_tree_refuses_and_nested_insists(tmp_path, cas):
    assert cas("init").code == 0
    sub = tmp_path / "notes" / "deep"
    sub.mkdir(parents=True)
    for cwd, args in ((sub, ()), (tmp_path, ("notes",)), (tmp_path / "notes", ("deep",))):
        line = _one_error_line(cas("init", *args, cwd=cwd))
        assert str(tmp_path / ".cas") in line and "--nested" in line
    assert not (tmp_path / "notes" / ".cas").exists() and not (sub / ".cas").exists()
    assert cas("init", "--nested", cwd=sub).code == 0
    assert (sub / ".cas" / "config.json").is_file()
    # The store that already exists is still named as such, not as nesting.
    assert "already exists" in cas("init").err


def test_init_outside_any_tree_and_with_store_still_work(tmp_path, cas):
    assert cas("init", "a").code == 0
    assert cas("init", "b").code == 0   # a sibling, not inside a/
    # An explicit store path is not a tree: it may live anywhere.
    assert cas("--store", str(tmp_path / "a" / "elsewhere"), "init").code == 0


def test_tag_refuses_to_move_without_force_and_says_what_it_did(root, cas):
    path, (old, new) = root
    r = cas("tag", "before-upgrade")
    assert r.code == 0 and r.err.strip() == f"tagged {new[:12]} as before-upgrade"
    line = _one_error_line(cas("tag", "before-upgrade", old))
    assert new[:12] in line and "-f" in line
    assert json.loads(cas("tag", "--json").out) == [{"tag": "before-upgrade", "id": new}]
    r = cas("tag", "before-upgrade")   # the same snapshot again: nothing to move
    assert r.code == 0 and "already at" in r.err
    r = cas("tag", "-f", "before-upgrade", old)
    assert r.code == 0 and r.err.strip() == \
        f"moved tag before-upgrade to {old[:12]} (was {new[:12]})"
    assert json.loads(cas("tag", "--json").out) == [{"tag": "before-upgrade", "id": old}]
    r = cas("tag", "-d", "before-upgrade")
    assert r.code == 0 and r.err.strip() == f"deleted tag before-upgrade (was {old[:12]})"
    assert json.loads(cas("tag", "--json").out) == []
    assert cas("-q", "tag", "quiet").err == ""


def test_tag_json_says_what_was_done(root, cas):
    _, (old, new) = root
    doc = json.loads(cas("tag", "t", old, "--json").out)
    assert doc == {"tag": "t", "action": "created", "id": old, "was": None}


def test_branch_says_what_it_did(root, cas):
    _, (old, new) = root
    assert cas("branch", "side", old).err.strip() == f"branch side at {old[:12]}"
    assert cas("branch", "side").err.strip() == f"branch side at {old[:12]}"
    assert cas("branch", "side", new).err.strip() == \
        f"moved branch side to {new[:12]} (was {old[:12]})"
    assert cas("branch", "--switch", "side").err.strip() == "switched to branch side"
    assert cas("branch", "--switch", "side").err.strip() == "already on branch side"
    heads = {b["branch"]: b["head"] for b in json.loads(cas("branch", "--json").out)}
    assert heads == {"main": False, "side": True}
    assert cas("branch", "--switch", "main").code == 0
    assert cas("branch", "-d", "side").err.strip() == f"deleted branch side (was {new[:12]})"
    assert cas("branch", "--switch", "fresh").err.strip() == \
        "switched to branch fresh (no snapshots yet)"
