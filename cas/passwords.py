"""Where a store's passphrase comes from when no one types it.

Three environment variables, as restic and borg read them: ``CAS_PASSWORD``
(the passphrase itself), ``CAS_PASSWORD_FILE`` (a file whose first line it
is) and ``CAS_PASSWORD_COMMAND`` (a command printing it: a keyring or a
password manager). The same three with another prefix give a new passphrase
(``CAS_NEW_PASSWORD``...). This is the one module outside the CLI that reads
them: the CLI and the MLX loader both ask it.
"""

from __future__ import annotations

import os
import select
import shlex
import stat
import subprocess
import time
from collections.abc import Mapping

from .errors import PasswordSourceFailed

COMMAND_TIMEOUT = 30.0
# A passphrase is a line; a file or command giving more than this is not one.
MAX_PASSWORD_BYTES = 64 << 10


def environment_source(prefix: str = "CAS_", environ: Mapping[str, str] | None = None) -> bytes | None:
    """The passphrase from ``{prefix}PASSWORD``, ``{prefix}PASSWORD_FILE`` or
    ``{prefix}PASSWORD_COMMAND``, the first of them set (an empty value is
    not set); None when none is. PasswordSourceFailed when the file or the
    command named cannot give one. The command may take
    ``{prefix}PASSWORD_COMMAND_TIMEOUT`` seconds (30 unless set)."""
    env = os.environ if environ is None else environ
    direct = env.get(prefix + "PASSWORD")
    if direct:
        return os.fsencode(direct)
    path = env.get(prefix + "PASSWORD_FILE")
    if path:
        return read_password_file(path, prefix + "PASSWORD_FILE")
    command = env.get(prefix + "PASSWORD_COMMAND")
    if command:
        source = prefix + "PASSWORD_COMMAND"
        return run_password_command(command, source, _timeout(env, source + "_TIMEOUT"))
    return None


def _timeout(env: Mapping[str, str], name: str) -> float:
    text = env.get(name)
    if not text:
        return COMMAND_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 1e6:
        raise PasswordSourceFailed(name, f"{text!r} is not a number of seconds")
    return seconds


def read_password_file(path: str, source: str | None = None) -> bytes:
    """The first line of the regular file at ``path``, its line end removed.
    A FIFO or device is refused rather than waited on or read without end."""
    where = f"{source} ({path})" if source else path
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise PasswordSourceFailed(where, e.strerror or str(e)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PasswordSourceFailed(where, "it is not a regular file")
        data = os.read(fd, MAX_PASSWORD_BYTES + 1)
    except OSError as e:
        raise PasswordSourceFailed(where, e.strerror or str(e)) from None
    finally:
        os.close(fd)
    return _first_line(data, where, "the file")


def run_password_command(command: str, source: str, timeout: float = COMMAND_TIMEOUT) -> bytes:
    """The first line a command prints, run without a shell (its words split
    as a shell would). Its stdin and stderr stay the caller's, so a password
    manager can ask for its own unlock on the terminal."""
    try:
        argv = shlex.split(command)
    except ValueError as e:
        raise PasswordSourceFailed(source, f"cannot split the command ({e})") from None
    if not argv:
        raise PasswordSourceFailed(source, "the command is empty")
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, close_fds=True)
    except OSError as e:
        raise PasswordSourceFailed(source, f"cannot run {argv[0]}: {e.strerror or e}") from None
    try:
        out = _bounded_output(proc, timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise PasswordSourceFailed(source, f"{argv[0]} gave no passphrase within {timeout:g} s") from None
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
    if len(out) > MAX_PASSWORD_BYTES:
        proc.kill()
        proc.wait()
        raise PasswordSourceFailed(source, f"the output of {argv[0]} is longer than a passphrase can be")
    if proc.returncode != 0:
        how = f"was killed by signal {-proc.returncode}" if proc.returncode < 0 \
            else f"exited with status {proc.returncode}"
        raise PasswordSourceFailed(source, f"{argv[0]} {how}")
    return _first_line(out, source, f"the output of {argv[0]}")


def _bounded_output(proc: subprocess.Popen, timeout: float) -> bytes:
    """What the command prints until it exits, or until it has printed more
    than a passphrase can be (then the caller stops it): a command printing
    without end must cost neither memory nor time beyond ``timeout``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    out = bytearray()
    while len(out) <= MAX_PASSWORD_BYTES:
        left = deadline - time.monotonic()
        if left <= 0:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        if not select.select([fd], [], [], left)[0]:
            continue
        piece = os.read(fd, 1 << 16)
        if not piece:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            break
        out += piece
    return bytes(out)


def _first_line(data: bytes, where: str, what: str) -> bytes:
    if len(data) > MAX_PASSWORD_BYTES:
        raise PasswordSourceFailed(where, f"{what} is longer than a passphrase can be")
    line = data.split(b"\n", 1)[0]
    line = line[:-1] if line.endswith(b"\r") else line
    if not line:
        raise PasswordSourceFailed(where, f"{what} is empty" if not data else f"the first line of {what} is empty")
    return line
