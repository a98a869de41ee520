"""Retention policies stored in the store, one per branch.

``policies/<branch>.json`` holds a branch's rules as canonical JSON
(FORMAT.md, "Retention policies"). Files are written atomically (temp file,
fsync, rename) with the store's modes, under ``refs/lock`` so that a policy
never changes while forget applies it; they are read bounded and without
following links, like refs. A policy with no rules is stored too: it keeps
everything, and is how a branch opts out of the watcher's default. In an
encrypted store the file is named by the branch name's label and sealed to
its place (docs/FORMAT.md §18.7); the branch inside says whose it is.
"""

from __future__ import annotations

import errno
import json
import os
import stat

from ..durable import atomic_output, make_dir, read_bounded
from ..errors import (
    InvalidRefName,
    PolicyFileInvalid,
    RetentionRuleInvalid,
    StoreFileInvalid,
    StoreWriteError,
    TargetRefused,
)
from ..storage.crypto import sealed_size
from .canonical import dumps
from .refs import check_ref_name, open_sealed
from .retention import Policy

POLICIES = "policies"
POLICY_VERSION = 1
SUFFIX = ".json"
# A policy is a few hundred bytes; a file far larger is damage, not a policy.
MAX_POLICY_BYTES = 64 << 10


class Policies:
    """The stored policies of a store's branches (``history`` gives the store
    and its refs lock)."""

    def __init__(self, history):
        self._store = history.store
        self._refs = history.refs
        self._dir = os.path.join(history.store.path, POLICIES)

    def get(self, branch: str) -> Policy | None:
        """The branch's stored policy; None when it has none."""
        check_ref_name(branch)
        fd = self._open_dir()
        if fd is None:
            return None
        try:
            return self._read(fd, self._name(branch), branch)
        finally:
            os.close(fd)

    def all(self) -> dict[str, Policy]:
        """Every stored policy, by branch name; the first unreadable one raises."""
        found = {}
        for branch, policy in self.each().items():
            if isinstance(policy, PolicyFileInvalid):
                raise policy
            found[branch] = policy
        return found

    def each(self) -> dict[str, Policy | PolicyFileInvalid]:
        """Every stored policy, or the error reading it, by branch name: one
        damaged policy does not hide the others (``cas maintain`` goes on)."""
        fd = self._open_dir()
        if fd is None:
            return {}
        try:
            found: dict[str, Policy | PolicyFileInvalid] = {}
            for name in sorted(os.listdir(fd)):
                label = _branch_of(name)
                if label is None:
                    continue
                try:
                    branch, policy = self._read_named(fd, name, label)
                except PolicyFileInvalid as e:
                    found[label] = e
                    continue
                if policy is not None:
                    found[branch] = policy
            return found
        finally:
            os.close(fd)

    def set(self, branch: str, policy: Policy) -> None:
        check_ref_name(branch)
        doc = {"type": "policy", "version": POLICY_VERSION, "branch": branch,
               "keep": policy.to_doc()}
        path = self._path(branch)
        with self._refs.locked():
            self._make_dir()
            if self._is_directory(self._name(branch)):  # a rename cannot replace it
                raise TargetRefused(path, "is a directory, not a policy file (remove it with "
                                          "'cas policy clear')")
            try:
                with atomic_output(path, self._store.layout.tmp,
                                   self._store.layout.modes.file) as f:
                    f.write(self._store.sealer.seal_file(self._relpath(branch), dumps(doc) + b"\n"))
            except OSError as e:
                # The error names the temp file; the user knows the policy.
                raise StoreWriteError(path, e.strerror or str(e)) from None

    def set_if_missing(self, branch: str, policy: Policy) -> bool:
        """Store ``policy`` unless the branch has one; True if it was stored."""
        with self._refs.locked():
            if self.get(branch) is not None:
                return False
            self.set(branch, policy)
            return True

    def clear(self, branch: str) -> bool:
        """Remove the branch's policy; False when it had none.

        Unread, so a damaged policy can be cleared (its error says to); what
        is in its place goes too, never followed: a link is unlinked, an
        empty directory removed."""
        check_ref_name(branch)
        name = self._name(branch)
        with self._refs.locked():
            fd = self._open_dir()
            if fd is None:
                return False
            try:
                removed = _remove_entry(fd, name, self._path(branch))
                if removed:
                    os.fsync(fd)
                return removed
            finally:
                os.close(fd)

    # -- files ---------------------------------------------------------------

    def _name(self, branch: str) -> str:
        """The branch's policy file name: the branch name, or its label."""
        return self._store.sealer.label(branch) + SUFFIX

    def _relpath(self, branch: str) -> str:
        return f"{POLICIES}/{self._name(branch)}"

    def _path(self, branch: str) -> str:
        return os.path.join(self._dir, self._name(branch))

    def _open_dir(self) -> int | None:
        """``policies/`` opened without following a link; None if absent."""
        try:
            return os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise StoreFileInvalid(self._dir, "is not a directory") from None
            raise PolicyFileInvalid(self._dir, e.strerror or str(e)) from None

    def _make_dir(self) -> None:
        """Create ``policies/``; refuse one that is a link (writes would land elsewhere)."""
        make_dir(self._dir, self._store.layout.modes.directory)
        if not stat.S_ISDIR(os.lstat(self._dir).st_mode):
            raise StoreFileInvalid(self._dir, "is not a directory")

    def _is_directory(self, name: str) -> bool:
        fd = self._open_dir()
        try:
            return fd is not None and stat.S_ISDIR(os.lstat(name, dir_fd=fd).st_mode)
        except FileNotFoundError:
            return False
        finally:
            if fd is not None:
                os.close(fd)

    def _read_named(self, dir_fd: int, name: str, label: str) -> tuple[str, Policy | None]:
        """(branch, policy) of the file ``name``: in a plain store the branch
        is ``label``, in an encrypted one the branch the file names inside."""
        if not self._store.sealer.encrypted:
            return label, self._read(dir_fd, name, label)
        doc = self._read_doc(dir_fd, name)
        if doc is None:
            return label, None  # removed meanwhile
        branch = doc.get("branch") if isinstance(doc, dict) else None
        if not isinstance(branch, str) or self._name(branch) != name:
            raise PolicyFileInvalid(os.path.join(self._dir, name), "it names no branch, or another "
                                    "branch than its file is named for")
        return branch, self._policy(doc, name, branch)

    def _read(self, dir_fd: int, name: str, branch: str) -> Policy | None:
        doc = self._read_doc(dir_fd, name)
        return None if doc is None else self._policy(doc, name, branch)

    def _read_doc(self, dir_fd: int, name: str):
        """The policy file's JSON; None when there is none."""
        path = os.path.join(self._dir, name)
        limit = sealed_size(MAX_POLICY_BYTES) if self._store.sealer.encrypted else MAX_POLICY_BYTES
        try:
            raw = read_bounded(name, limit, dir_fd=dir_fd)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise PolicyFileInvalid(path, e.strerror or str(e)) from None
        data = open_sealed(self._store, f"{POLICIES}/{name}", raw)
        if data is None:
            raise PolicyFileInvalid(path, "it does not open under this store's keys (damaged, "
                                          "or moved from another file)")
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise PolicyFileInvalid(path, "it is not JSON") from None
        except RecursionError:  # the C decoder's answer to deep nesting: damage, not a bug
            raise PolicyFileInvalid(path, "it is JSON nested too deeply to be a policy") from None

    def _policy(self, doc, name: str, branch: str) -> Policy:
        path = os.path.join(self._dir, name)
        if not isinstance(doc, dict) or doc.get("type") != "policy" or \
                doc.get("version") != POLICY_VERSION or doc.get("branch") != branch:
            raise PolicyFileInvalid(path, f"it is not a version {POLICY_VERSION} policy "
                                          f"of branch {branch}")
        try:
            return Policy.from_doc(doc.get("keep"))
        except RetentionRuleInvalid as e:
            raise PolicyFileInvalid(path, str(e)) from None


def _remove_entry(dir_fd: int, name: str, path: str) -> bool:
    """Unlink ``name`` in ``dir_fd`` (a link itself, never its target), or
    rmdir it when it is a directory; False when there is nothing."""
    try:
        os.unlink(name, dir_fd=dir_fd)
        return True
    except FileNotFoundError:
        return False
    except IsADirectoryError:
        pass
    except OSError as e:
        if e.errno != errno.EPERM:  # what unlink of a directory says on some systems
            raise StoreWriteError(path, e.strerror or str(e)) from None
    try:
        os.rmdir(name, dir_fd=dir_fd)
        return True
    except FileNotFoundError:
        return False
    except OSError as e:
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise TargetRefused(path, "is a directory with files in it, not a policy file; "
                                      "remove it by hand") from None
        raise StoreWriteError(path, e.strerror or str(e)) from None


def _branch_of(name: str) -> str | None:
    if not name.endswith(SUFFIX):
        return None
    try:
        return check_ref_name(name[:-len(SUFFIX)])
    except InvalidRefName:
        return None
