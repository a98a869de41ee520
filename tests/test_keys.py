"""Key slots and passphrase sources, through the library (real files, real
processes; the CLI's side is in test_crypto_cli.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cas import passwords
from cas.errors import (
    KeySlotsUnusable,
    LastKeySlot,
    PasswordRequired,
    PasswordSourceFailed,
    UnknownKeySlot,
    WrongPassword,
)
from cas.storage import keys

REPO = Path(__file__).resolve().parent.parent
# The cheapest parameters a slot may have: these tests are about slots, not Argon2id.
FAST_KDF = {"name": "argon2id", "memory_kib": 8 << 10, "iterations": 1, "lanes": 1}


def _slot_store(root: Path, passwords_: list[bytes]) -> tuple[str, str, bytes, list[str]]:
    """A directory holding keys/ with one slot per passphrase, all wrapping one master key."""
    (root / "tmp").mkdir(parents=True)
    store_id = os.urandom(16).hex()
    master = os.urandom(32)
    ids = []
    for pw in passwords_:
        slot = keys.make_slot(store_id, master, pw, FAST_KDF)
        keys.write_slot(str(root), slot, 0o700, 0o600)
        ids.append(slot.slot_id)
    return str(root), store_id, master, ids


# -- passphrase sources ----------------------------------------------------------


def test_the_sources_are_taken_in_order_and_empty_values_are_unset(tmp_path):
    f = tmp_path / "pw"
    f.write_bytes(b"from file\r\nsecond line\n")
    env = {"CAS_PASSWORD": "", "CAS_PASSWORD_FILE": str(f), "CAS_PASSWORD_COMMAND": "echo from-command"}
    assert passwords.environment_source(environ=env) == b"from file"
    assert passwords.environment_source(environ={**env, "CAS_PASSWORD": "direct"}) == b"direct"
    assert passwords.environment_source(environ={**env, "CAS_PASSWORD_FILE": ""}) == b"from-command"
    assert passwords.environment_source(environ={}) is None
    assert passwords.environment_source("CAS_NEW_", {"CAS_NEW_PASSWORD": "n", "CAS_PASSWORD": "o"}) == b"n"


@pytest.mark.parametrize("kind", ["fifo", "dir", "missing", "empty", "empty line", "devzero"])
def test_a_password_file_that_is_no_passphrase_is_refused_without_hanging(tmp_path, kind):
    path = tmp_path / "pw"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "empty line":
        path.write_bytes(b"\nsecret\n")
    elif kind == "devzero":
        path = Path("/dev/zero")
    started = time.monotonic()
    with pytest.raises(PasswordSourceFailed) as e:
        passwords.environment_source(environ={"CAS_PASSWORD_FILE": str(path)})
    assert time.monotonic() - started < 2
    assert "CAS_PASSWORD_FILE" in str(e.value) and "\n" not in str(e.value)


def test_a_password_file_may_be_a_link_to_a_regular_file(tmp_path):
    (tmp_path / "real").write_bytes(b"linked\n")
    (tmp_path / "pw").symlink_to(tmp_path / "real")
    assert passwords.environment_source(environ={"CAS_PASSWORD_FILE": str(tmp_path / "pw")}) == b"linked"


def test_a_command_runs_without_a_shell(tmp_path):
    marker = tmp_path / "ran"
    # With a shell, ';' would run touch; split as words, it is echo's argument.
    got = passwords.environment_source(environ={"CAS_PASSWORD_COMMAND": f"echo 'a b' ; touch {marker}"})
    assert got == f"a b ; touch {marker}".encode()
    assert not marker.exists()


@pytest.mark.parametrize("command,why", [
    ("sh -c 'exit 3'", "exited with status 3"),
    ("sh -c 'kill -9 $$'", "killed by signal 9"),
    ("true", "is empty"),
    ("printf '\\nx'", "first line"),
    ("/no/such/program", "cannot run /no/such/program"),
    ("echo 'unbalanced", "cannot split"),
])
def test_a_failing_command_is_one_line(command, why):
    with pytest.raises(PasswordSourceFailed) as e:
        passwords.environment_source(environ={"CAS_PASSWORD_COMMAND": command})
    assert why in str(e.value) and "\n" not in str(e.value)


def test_a_hanging_command_is_stopped_at_its_timeout(tmp_path):
    pidfile = tmp_path / "pid"
    env = {"CAS_PASSWORD_COMMAND": f"sh -c 'echo $$ > {pidfile}; exec sleep 60'",
           "CAS_PASSWORD_COMMAND_TIMEOUT": "0.5"}
    started = time.monotonic()
    with pytest.raises(PasswordSourceFailed) as e:
        passwords.environment_source(environ=env)
    assert time.monotonic() - started < 5
    assert "within 0.5 s" in str(e.value)
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):   # killed and reaped, not left running
        os.kill(pid, 0)
    with pytest.raises(PasswordSourceFailed):
        passwords.environment_source(environ={**env, "CAS_PASSWORD_COMMAND_TIMEOUT": "soon"})


# -- slots -------------------------------------------------------------------------


def test_any_slot_opens_and_names_itself(tmp_path):
    root, store_id, master, ids = _slot_store(tmp_path / "s", [b"one", b"two"])
    assert keys.unlock(root, store_id, b"two") == (master, ids[1])
    assert keys.opened_slot(store_id) == ids[1]
    with pytest.raises(WrongPassword):
        keys.unlock(root, store_id, b"three")


def test_a_slot_moved_to_another_store_or_file_name_does_not_open(tmp_path):
    root, store_id, _master, ids = _slot_store(tmp_path / "s", [b"pw"])
    other, other_id, _m, _ids = _slot_store(tmp_path / "o", [b"other"])
    slot = Path(root) / "keys" / f"{ids[0]}.json"
    (Path(other) / "keys" / slot.name).write_bytes(slot.read_bytes())
    with pytest.raises(WrongPassword):      # bound to its store's id
        keys.unlock(other, other_id, b"pw")
    renamed = "00" * 8
    (slot.parent / f"{renamed}.json").write_text(slot.read_text().replace(ids[0], renamed))
    slot.unlink()
    with pytest.raises(WrongPassword):      # bound to its own id
        keys.unlock(root, store_id, b"pw")


@pytest.mark.parametrize("state", ["missing", "empty", "garbage", "symlink", "fifo", "huge kdf"])
def test_no_usable_slot_is_said_before_a_passphrase_is_asked(tmp_path, state):
    root, _store_id, _master, ids = _slot_store(tmp_path / "s", [b"pw"])
    slot = Path(root) / "keys" / f"{ids[0]}.json"
    if state == "missing":
        slot.unlink()
        (Path(root) / "keys").rmdir()
    elif state == "empty":
        slot.unlink()
    elif state == "garbage":
        slot.write_bytes(b"\x00not json")
    elif state == "symlink":
        (tmp_path / "elsewhere.json").write_bytes(slot.read_bytes())
        slot.unlink()
        slot.symlink_to(tmp_path / "elsewhere.json")
    elif state == "fifo":
        slot.unlink()
        os.mkfifo(slot)
    elif state == "huge kdf":
        slot.write_text(slot.read_text().replace('"memory_kib": 8192', '"memory_kib": 1073741824'))
    asked = []
    with pytest.raises(KeySlotsUnusable) as e:
        keys.sealer_for(root, os.urandom(16).hex(), True, lambda: asked.append(1) or b"pw")
    assert asked == [] and e.value.exit_code == 1


def test_a_damaged_slot_beside_a_good_one_is_listed_and_skipped(tmp_path):
    root, store_id, _master, ids = _slot_store(tmp_path / "s", [b"pw", b"other"])
    (Path(root) / "keys" / f"{ids[1]}.json").write_bytes(b"{}")
    slots, damaged = keys.slot_files(root)
    assert [s.slot_id for s in slots] == [ids[0]] and [d for d, _ in damaged] == [ids[1]]
    keys._unlocked.pop(store_id, None)
    assert keys.sealer_for(root, store_id, True, b"pw").encrypted


def test_a_source_with_nothing_to_give_is_password_required(tmp_path):
    root, store_id, _master, _ids = _slot_store(tmp_path / "s", [b"pw"])
    with pytest.raises(PasswordRequired):
        keys.sealer_for(root, store_id, True, lambda: None)


def test_removing_refuses_the_last_slot_and_unknown_ids_but_takes_damaged_ones(tmp_path):
    root, _store_id, _master, ids = _slot_store(tmp_path / "s", [b"a", b"b"])
    for bad in ("nosuch", "../config", ""):
        with pytest.raises(UnknownKeySlot) as e:
            keys.remove_slot(root, bad)
        assert ids[0] in str(e.value)
    (Path(root) / "keys" / f"{ids[1]}.json").write_bytes(b"damaged")
    with pytest.raises(LastKeySlot):          # the damaged one does not open: a is the last
        keys.remove_slot(root, ids[0])
    keys.remove_slot(root, ids[1])
    assert os.listdir(Path(root) / "keys") == [f"{ids[0]}.json"]


_REMOVE = """
import sys
from cas.errors import CasError
from cas.storage import keys
try:
    keys.remove_slot(sys.argv[1], sys.argv[2])
except CasError as e:
    print(type(e).__name__)
"""


def test_two_removals_at_once_leave_one_slot(tmp_path):
    """Each removal checks and removes under keys/'s lock: two racing ones
    must not each see the other's slot and remove both."""
    root, _store_id, _master, ids = _slot_store(tmp_path / "s", [b"a", b"b"])
    with keys.keys_locked(root):
        procs = [subprocess.Popen([sys.executable, "-c", _REMOVE, root, slot_id], cwd=REPO,
                                  stdout=subprocess.PIPE, text=True) for slot_id in ids]
        time.sleep(1.0)
        assert all(p.poll() is None for p in procs)   # both wait for the lock
        assert len(os.listdir(Path(root) / "keys")) == 2
    outs = [p.communicate(timeout=30)[0].strip() for p in procs]
    assert sorted(outs) == ["", "LastKeySlot"]
    assert len(os.listdir(Path(root) / "keys")) == 1


def test_keys_as_a_link_is_never_followed(tmp_path):
    """A crafted store whose keys/ links elsewhere: its slots are not read
    from there, and no slot is written or removed there."""
    root, store_id, master, ids = _slot_store(tmp_path / "s", [b"pw", b"two"])
    elsewhere = tmp_path / "elsewhere"
    (Path(root) / "keys").rename(elsewhere)
    (Path(root) / "keys").symlink_to(elsewhere)
    before = sorted(os.listdir(elsewhere))
    keys._unlocked.pop(store_id, None)
    with pytest.raises(KeySlotsUnusable) as e:
        keys.sealer_for(root, store_id, True, b"pw")
    assert "symbolic link" in str(e.value)
    with pytest.raises(OSError):
        keys.write_slot(root, keys.make_slot(store_id, master, b"new", FAST_KDF), 0o700, 0o600)
    with pytest.raises(OSError):
        keys.remove_slot(root, ids[0])
    assert sorted(os.listdir(elsewhere)) == before
    assert os.listdir(Path(root) / "tmp") == []
