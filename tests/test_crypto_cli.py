"""Encrypted stores through the real ``cas`` executable: init --encrypt, the
passphrase sources, cas key, ls --b3sum, and what a wrong passphrase, a
failing source or damaged key slots give."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_")}
    return {**env, **extra}


def cas(*args: str, cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """The real cas, stdin not a terminal, with only the CAS_* variables given."""
    return subprocess.run([sys.executable, "-m", "cas.cli", *args], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _one_line_error(r: subprocess.CompletedProcess, code: int, words: str) -> None:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == "", r.stdout
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("cas: error: "), r.stderr
    assert words in r.stderr, r.stderr


@pytest.fixture
def tree(tmp_path) -> Path:
    """A working tree with an encrypted store (passphrase 'pw') and one snapshot."""
    t = tmp_path / "tree"
    (t / "notes").mkdir(parents=True)
    (t / "notes" / "a.md").write_text("alpha\n")
    (t / "b.bin").write_bytes(os.urandom(3000))
    (t / "empty").write_bytes(b"")
    r = cas("init", "--encrypt", cwd=t, CAS_PASSWORD="pw")
    assert r.returncode == 0 and "initialized empty encrypted cas store" in r.stderr, r.stderr
    assert cas("snapshot", "-m", "first", cwd=t, CAS_PASSWORD="pw").returncode == 0
    return t


def _slots(tree: Path) -> list[str]:
    return sorted(p.stem for p in (tree / ".cas" / "keys").iterdir())


def _opens(tree: Path, password: str) -> bool:
    r = cas("key", "list", cwd=tree, CAS_PASSWORD=password)
    assert r.returncode in (0, 2), r.stderr
    return r.returncode == 0


# -- the passphrase sources ---------------------------------------------------------


def test_every_source_opens_and_key_list_marks_the_slot_that_did(tree, tmp_path):
    pwfile = tmp_path / "pw"
    pwfile.write_text("pw\n")
    for env in ({"CAS_PASSWORD": "pw"}, {"CAS_PASSWORD_FILE": str(pwfile)},
                {"CAS_PASSWORD_COMMAND": f"cat {pwfile}"}):
        r = cas("key", "list", "--json", cwd=tree, **env)
        assert r.returncode == 0, (env, r.stderr)
        [slot] = json.loads(r.stdout)
        assert slot["current"] and slot["id"] == _slots(tree)[0]
        assert slot["kdf"]["memory_kib"] >= 64 << 10


@pytest.mark.parametrize("command", ["log", "ls -r", "cat HEAD:notes/a.md", "key list"])
def test_a_wrong_passphrase_is_one_line_exit_2_and_nothing_else(tree, command):
    _one_line_error(cas(*command.split(), cwd=tree, CAS_PASSWORD="wrong"), 2, "wrong passphrase")


def test_no_passphrase_and_no_terminal_says_where_to_give_one(tree):
    _one_line_error(cas("log", cwd=tree), 2, "CAS_PASSWORD_COMMAND")


@pytest.mark.parametrize("command,words", [
    ("sh -c 'exit 7'", "exited with status 7"),
    ("true", "is empty"),
    ("sleep 30", "within 1 s"),
])
def test_a_failing_or_hanging_passphrase_command_is_one_line_exit_2(tree, command, words):
    started = time.monotonic()
    r = cas("log", cwd=tree, CAS_PASSWORD_COMMAND=command, CAS_PASSWORD_COMMAND_TIMEOUT="1")
    assert time.monotonic() - started < 15
    _one_line_error(r, 2, words)


def test_a_password_file_that_is_a_fifo_is_refused_at_once(tree, tmp_path):
    os.mkfifo(tmp_path / "fifo")
    _one_line_error(cas("log", cwd=tree, CAS_PASSWORD_FILE=str(tmp_path / "fifo"), timeout=20),
                    2, "not a regular file")


# -- damaged key slots ----------------------------------------------------------------


@pytest.mark.parametrize("state", ["missing", "empty", "damaged", "fifo"])
def test_a_store_with_no_usable_slot_says_so_with_exit_1(tree, state):
    keys_dir = tree / ".cas" / "keys"
    [slot] = list(keys_dir.iterdir())
    if state == "missing":
        slot.unlink()
        keys_dir.rmdir()
    elif state == "empty":
        slot.unlink()
    elif state == "damaged":
        slot.write_text(slot.read_text()[:-20])
    elif state == "fifo":
        slot.unlink()
        os.mkfifo(slot)
    # Said before any passphrase is looked for: the command would fail.
    r = cas("log", cwd=tree, CAS_PASSWORD_COMMAND="false", timeout=20)
    _one_line_error(r, 1, "no usable key slot")


def test_a_damaged_slot_beside_a_good_one_is_named_and_the_good_one_opens(tree):
    r = cas("key", "add", cwd=tree, CAS_PASSWORD="pw", CAS_NEW_PASSWORD="second")
    assert r.returncode == 0, r.stderr
    second = r.stderr.split()[-1]
    [first] = [s for s in _slots(tree) if s != second]
    (tree / ".cas" / "keys" / f"{first}.json").write_bytes(b'{"id": "garbage"}')
    good = "second"
    r = cas("key", "list", cwd=tree, CAS_PASSWORD=good)
    assert r.returncode == 0, r.stderr
    assert f"* {second}" in r.stdout
    assert f"  {first}" in r.stdout and "damaged: not a key slot" in r.stdout
    assert _opens(tree, good)
    damaged = [d for d in json.loads(cas("key", "list", "--json", cwd=tree, CAS_PASSWORD=good).stdout)
               if "damaged" in d]
    assert [d["id"] for d in damaged] == [first]
    # The damaged slot can be removed; the last good one cannot.
    assert cas("key", "remove", first, cwd=tree, CAS_PASSWORD=good).returncode == 0
    _one_line_error(cas("key", "remove", second, cwd=tree, CAS_PASSWORD=good), 2, "last key")


# -- cas key ----------------------------------------------------------------------------


def test_add_remove_and_passwd_change_which_passphrases_open(tree, tmp_path):
    newfile = tmp_path / "new"
    newfile.write_text("from-file\n")
    r = cas("key", "add", "--new-password-file", str(newfile), cwd=tree, CAS_PASSWORD="pw")
    assert r.returncode == 0 and "added key" in r.stderr, r.stderr
    assert _opens(tree, "pw") and _opens(tree, "from-file")
    added = r.stderr.split()[-1]
    [original] = [s for s in _slots(tree) if s != added]

    r = cas("key", "passwd", cwd=tree, CAS_PASSWORD="from-file", CAS_NEW_PASSWORD="changed")
    assert r.returncode == 0, r.stderr
    assert added not in _slots(tree) and len(_slots(tree)) == 2
    assert not _opens(tree, "from-file") and _opens(tree, "changed") and _opens(tree, "pw")

    _one_line_error(cas("key", "remove", "nosuch", cwd=tree, CAS_PASSWORD="pw"), 2, "has no key 'nosuch'")
    assert cas("key", "remove", original, cwd=tree, CAS_PASSWORD="changed").returncode == 0
    assert not _opens(tree, "pw")
    [last] = _slots(tree)
    _one_line_error(cas("key", "remove", last, cwd=tree, CAS_PASSWORD="changed"), 2, "last key")
    assert _opens(tree, "changed")
    # Each change is in the audit trail with the keys it touched.
    log = json.loads(cas("audit", "log", "--json", cwd=tree, CAS_PASSWORD="changed").stdout)
    changes = [(r["command"][1:], r["refs"], r["outcome"]["status"]) for r in log if r["command"][1:2] == ["key"]]
    assert (["key", "add", "--new-password-file", str(newfile)], [added], "ok") in changes
    assert any(c[0] == ["key", "passwd"] and added in c[1] and c[2] == "ok" for c in changes)
    assert (["key", "remove", original], [original], "ok") in changes


def test_a_new_passphrase_must_be_given_and_not_empty(tree, tmp_path):
    (tmp_path / "emptyfile").write_bytes(b"\n")
    _one_line_error(cas("key", "add", cwd=tree, CAS_PASSWORD="pw"), 2, "CAS_NEW_PASSWORD")
    _one_line_error(cas("key", "add", "--new-password-file", str(tmp_path / "emptyfile"), cwd=tree,
                        CAS_PASSWORD="pw"), 2, "empty")
    assert len(_slots(tree)) == 1


def test_key_commands_on_a_plain_store_say_it_is_not_encrypted(tmp_path):
    assert cas("init", cwd=tmp_path).returncode == 0
    _one_line_error(cas("key", "list", cwd=tmp_path), 2, "is not encrypted")


def test_init_encrypt_refuses_before_making_anything(tmp_path):
    _one_line_error(cas("init", "--encrypt", cwd=tmp_path), 2, "CAS_PASSWORD")
    assert not (tmp_path / ".cas").exists()
    (tmp_path / "empty").write_bytes(b"")
    _one_line_error(cas("init", "--encrypt", cwd=tmp_path, CAS_PASSWORD_FILE=str(tmp_path / "empty")),
                    2, "is empty")
    assert not (tmp_path / ".cas").exists()
    assert cas("init", cwd=tmp_path).returncode == 0
    # An existing store is said before a passphrase is asked (the command would fail).
    _one_line_error(cas("init", "--encrypt", cwd=tmp_path, CAS_PASSWORD_COMMAND="false"), 2,
                    "already exists")


# -- typed on a terminal -------------------------------------------------------------------


def _on_a_terminal(args: list[str], cwd: Path, lines: list[str], **env: str) -> tuple[int, str]:
    """Run cas with stdin a terminal, typing ``lines`` one per prompt."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "cas.cli", *args], cwd=cwd, env=_env(**env),
                            stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    os.close(follower)
    err = b""
    assert proc.stderr is not None
    for number, line in enumerate(lines, 1):
        # A prompt ends with ': ' on stderr; typing sooner would be flushed.
        while err.count(b": ") < number:
            ready, _, _ = select.select([proc.stderr], [], [], 30)
            chunk = os.read(proc.stderr.fileno(), 4096) if ready else b""
            assert chunk, f"cas did not ask for passphrase {number}: {err!r}"
            err += chunk
        os.write(leader, line.encode() + b"\n")
    _out, rest = proc.communicate(timeout=60)
    os.close(leader)
    return proc.returncode, (err + rest).decode()


def test_init_asks_twice_on_a_terminal_and_open_asks_once(tmp_path):
    code, err = _on_a_terminal(["init", "--encrypt"], tmp_path, ["typed", "typed"])
    assert code == 0, err
    assert "New passphrase:" in err and "The same again:" in err
    code, err = _on_a_terminal(["key", "list"], tmp_path, ["typed"])
    assert code == 0 and "Passphrase of the store:" in err, err
    assert _opens_plainly(tmp_path, "typed")


def _opens_plainly(cwd: Path, password: str) -> bool:
    return cas("key", "list", cwd=cwd, CAS_PASSWORD=password).returncode == 0


def test_two_different_passphrases_typed_make_no_store(tmp_path):
    code, err = _on_a_terminal(["init", "--encrypt"], tmp_path, ["one", "two"])
    assert code == 2 and "the two passphrases typed differ" in err, err
    assert not (tmp_path / ".cas").exists()


# -- ls --b3sum ------------------------------------------------------------------------------


@pytest.mark.parametrize("encrypt", [False, True])
def test_ls_b3sum_prints_what_b3sum_prints(tmp_path, encrypt):
    t = tmp_path / "t"
    (t / "d" / "e").mkdir(parents=True)
    files = {"top.txt": b"top\n", "d/one.bin": os.urandom(5000), "d/e/big.bin": os.urandom(3 << 20),
             "d/e/empty": b""}
    for name, data in files.items():
        (t / name).write_bytes(data)
    (t / "d" / "link").symlink_to("one.bin")
    pw = {"CAS_PASSWORD": "pw"} if encrypt else {}
    assert cas("init", *(["--encrypt"] if encrypt else []), cwd=t, **pw).returncode == 0
    assert cas("snapshot", cwd=t, **pw).returncode == 0
    r = cas("ls", "-r", "--b3sum", "HEAD", cwd=t, **pw)
    assert r.returncode == 0, r.stderr
    expected = subprocess.run(["b3sum", *files], cwd=t, capture_output=True, text=True, check=True).stdout
    assert sorted(r.stdout.splitlines()) == sorted(expected.splitlines())
    one_level = cas("ls", "--b3sum", "HEAD:d", cwd=t, **pw).stdout
    assert one_level.splitlines() == [line for line in expected.splitlines() if line.endswith("  d/one.bin")]
    _one_line_error(cas("ls", "--b3sum", "--json", cwd=t, **pw), 2, "--b3sum")


# -- killed while changing keys ----------------------------------------------------------------


def _killed_at(args: list[str], tree: Path, delay: float, **env: str) -> bool:
    """Whether the kill found the command still running."""
    proc = subprocess.Popen([sys.executable, "-m", "cas.cli", *args], cwd=tree, env=_env(**env),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    return proc.wait() == -signal.SIGKILL


def _killed_when_slots_change(args: list[str], tree: Path, **env: str) -> None:
    """SIGKILL the moment keys/ changes: between a new slot and the removal of the old."""
    before = _slots(tree)
    proc = subprocess.Popen([sys.executable, "-m", "cas.cli", *args], cwd=tree, env=_env(**env),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and _slots(tree) == before:
        pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _whole_slots_only(tree: Path) -> None:
    for path in (tree / ".cas" / "keys").iterdir():
        doc = json.loads(path.read_text())
        assert doc["id"] == path.stem and len(bytes.fromhex(doc["wrapped"])) == 48


@pytest.mark.parametrize("command", ["add", "passwd"])
def test_sigkill_while_changing_keys_leaves_a_store_that_opens(tree, command):
    """Killed at any point (while unlocking, deriving the new slot's key,
    writing it, or between adding and removing), the old passphrase opens
    the store, or the command had finished and the new one does."""
    started = time.monotonic()
    r = cas("key", "add", cwd=tree, CAS_PASSWORD="pw", CAS_NEW_PASSWORD="calibrate")
    full = time.monotonic() - started
    assert r.returncode == 0, r.stderr
    assert cas("key", "remove", r.stderr.split()[-1], cwd=tree, CAS_PASSWORD="pw").returncode == 0
    env = {"CAS_PASSWORD": "pw", "CAS_NEW_PASSWORD": "new"}
    killed = 0
    for round_, fraction in enumerate([0.3, 0.6, 0.8, 0.95, None]):
        before = len(_slots(tree))
        if fraction is None:
            _killed_when_slots_change(["key", command], tree, **env)
        else:
            landed = _killed_at(["key", command], tree, full * fraction, **env)
            killed += landed
            if not landed:      # the machine got faster than when timed: aim earlier
                full /= 2
        _whole_slots_only(tree)
        old, new = _opens(tree, "pw"), _opens(tree, "new")
        assert old or (command == "passwd" and new), (round_, fraction)
        if command == "add":
            assert old and len(_slots(tree)) in (before, before + 1)
        elif not old:
            # The change finished: go back for the next round.
            r = cas("key", "passwd", cwd=tree, CAS_PASSWORD="new", CAS_NEW_PASSWORD="pw")
            assert r.returncode == 0, r.stderr
    assert killed >= 2      # the kills landed while the command ran

