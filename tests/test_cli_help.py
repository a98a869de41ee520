"""Every command's --help ends its text with an example, as git's and restic's do,
and every example parses: its command exists and takes the options it shows."""

from __future__ import annotations

import shlex
import subprocess
import sys

import click
import pytest

from cas.cli.main import cli


def _commands() -> list[tuple[list[str], click.Command]]:
    """(path, command) for the top level and every command of every group, walked."""
    found: list[tuple[list[str], click.Command]] = []
    stack: list[tuple[list[str], click.Command, click.Context | None]] = [(["cas"], cli, None)]
    while stack:
        path, command, parent = stack.pop()
        ctx = click.Context(command, info_name=path[-1], parent=parent)
        found.append((path, command))
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None, name
                stack.append(([*path, name], sub, ctx))
    return sorted(found, key=lambda item: item[0])


COMMANDS = _commands()


def _help(path: list[str], command: click.Command) -> str:
    parent = None
    for name in path[:-1]:
        parent = click.Context(cli if parent is None else parent.command, info_name=name, parent=parent)
    return command.get_help(click.Context(command, info_name=path[-1], parent=parent))


def _examples(text: str) -> list[str]:
    """The lines of the 'Examples:' block of a help text (before the options)."""
    body = text.split("\nOptions:")[0]
    assert "\n  Examples:\n" in body, "no 'Examples:' block"
    block = body.split("\n  Examples:\n", 1)[1]
    return [line.strip() for line in block.splitlines() if line.startswith("    ")]


def test_the_walk_sees_every_command():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"cas", "cas snapshot", "cas model import", "cas stores ls", "cas index rebuild",
            "cas policy set", "cas help"} <= names
    assert len(names) > 40


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_shows_an_example_of_itself(path, command):
    examples = _examples(_help(path, command))
    assert examples, "an empty 'Examples:' block"
    assert any(" ".join(path) in e for e in examples), examples


def _parse(argv: list[str]) -> None:
    """Parse ``argv`` (after 'cas') as click would run it, without running it."""
    ctx = cli.make_context("cas", list(argv))
    command: click.Command = cli
    while isinstance(command, click.Group):
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if not rest:
            return
        name, sub, rest = command.resolve_command(ctx, rest)
        assert sub is not None, name
        ctx = sub.make_context(name, rest, parent=ctx)
        command = sub


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_example_parses(path, command):
    for example in _examples(_help(path, command)):
        for part in example.split("&&"):
            words = shlex.split(part.split("|")[0])
            if words and words[0] == "cas":
                _parse(words[1:])


def test_help_command_and_help_option_agree():
    run = [sys.executable, "-m", "cas.cli"]
    by_command = subprocess.run([*run, "help", "model", "import"], capture_output=True, text=True)
    by_option = subprocess.run([*run, "model", "import", "--help"], capture_output=True, text=True)
    assert by_command.returncode == 0 and by_command.stdout == by_option.stdout
    assert "Examples:\n    cas model import" in by_command.stdout


# -- messages that point to the right command ------------------------------------

def test_a_model_name_given_as_a_ref_points_to_model_log(cas, tmp_path):
    from tests.test_models_everyday import make_model
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.txt").write_text("a\n")
    assert cas("init", cwd=tree).code == 0
    assert cas("snapshot", cwd=tree).code == 0
    assert cas("model", "import", str(make_model(tmp_path / "m", 1)), "--name", "tiny-coder",
               cwd=tree).code == 0
    for args in (["log", "tiny-coder"], ["show", "tiny-coder"], ["ls", "tiny-coder"],
                 ["restore", "tiny-coder", "--to", str(tmp_path / "out")]):
        r = cas(*args, cwd=tree)
        assert r.code == 2, args
        assert "'tiny-coder' is a model: see 'cas model log tiny-coder'" in r.err, args
    assert "ambiguous argument 'nosuch'" in cas("log", "nosuch", cwd=tree).err


def test_counts_are_worded_for_one(cas, tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.txt").write_text("a\n")
    assert cas("init", cwd=tree).code == 0
    assert cas("snapshot", cwd=tree).code == 0
    said = cas("stats", "HEAD", cwd=tree).text
    assert "1 file," in said and "1 files" not in said
    assert "(s)" not in cas("verify", "--full", cwd=tree).err
