"""Entry point: the command group, store discovery, and error reporting.

Errors become one line on stderr and an exit code here, in one place:
0 ok, 1 a check found a problem, 2 a usage or input error, 130 interrupted.
Only this package reads ``CAS_*`` environment variables (and cas.passwords,
for the passphrase sources the MLX loader reads too).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import importlib
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

import click

from ..errors import EXIT_PROBLEM_FOUND, EXIT_USAGE, ArgumentsConflict, CasError, UnknownCommand
from ..passwords import environment_source
from ..storage import keys
from ..storage.store import Store, find_store, locate_store
from .audit_trail import AuditNotes, record_command
from .output import error_line, warn

if TYPE_CHECKING:   # imported by the commands that use them: start-up stays short
    from ..model.history import History
    from .history_args import PathPlace

F = TypeVar("F", bound=Callable)


class Context:
    def __init__(self, store_path: str | None, quiet: bool, audit: AuditNotes | None = None):
        self.store_path = store_path
        self.quiet = quiet
        # The history opened last, and where paths given on the command
        # line lie in its tracked tree (worked out when a path is first given).
        self.history: History | None = None
        self.path_place: PathPlace | None = None
        self.audit = audit or AuditNotes([])

    def open_store(self, **kwargs) -> Store:
        store = Store.open(self.resolve_store_path(), **kwargs)
        try:
            _warn_if_exposed(store)
        except BaseException:
            store.close()
            raise
        self.audit.opened(store)
        return store

    def open_history(self, **kwargs) -> History:
        from ..model.history import History
        history = History(self.open_store(**kwargs))
        self.history, self.path_place = history, None
        self.audit.histories.append(history)
        return history

    @contextlib.contextmanager
    def opened(self, **kwargs) -> Iterator[History]:
        """The store's history, open for the ``with`` block: each command's
        one way in (``exclusive=True`` for gc, rebuilds and repairs)."""
        history = self.open_history(**kwargs)
        with history.store:
            yield history

    def resolve_store_path(self) -> str:
        """--store / CAS_STORE (a store directory, or a tree holding .cas/),
        else the nearest store above the current directory."""
        return locate_store(self.store_path) if self.store_path else find_store(os.getcwd())


def _warn_if_exposed(store: Store) -> None:
    """One line when a store gives others more access than it should: a
    store made by an older cas, or under a lax umask, lets every local user
    read the files it holds copies of."""
    exposed = store.exposed_paths()
    if not exposed:
        return
    who, bits = ("users outside its group", "o-rwx") if store.config.shared \
        else ("other users", "go-rwx")
    more = f" and {len(exposed) - 1} more" if len(exposed) > 1 else ""
    warn(f"store {store.path} is open to {who} ({exposed[0]}{more}); "
         f"close it with: chmod -R {bits} {shlex.quote(store.path)}")


pass_ctx = click.make_pass_decorator(Context)


def json_option(help: str = "Print JSON.") -> Callable[[F], F]:
    """``--json``, as every command that prints data takes it."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def branch_option(help: str) -> Callable[[F], F]:
    """``-b/--branch NAME``, completed from the store's branches."""
    from .complete import complete_branch
    return click.option("-b", "--branch", help=help, shell_complete=complete_branch)


def at_option(help: str = "The version current at TIME.") -> Callable[[F], F]:
    """``--at TIME`` (ISO 8601, '2h ago', 'yesterday'...), as a time in ns."""
    from .timespec import TimeParam
    return click.option("--at", "at_ns", type=TimeParam(), help=help)


# Each command's module, imported only when that command runs: importing
# them all (watchdog, rich, the model and gc code) doubled the start-up time
# of every command.
COMMAND_MODULES = {
    "init": "cmd_init", "add": "cmd_add", "cat": "cmd_cat", "objects": "cmd_objects",
    "stats": "cmd_stats", "du": "cmd_stats", "verify": "cmd_verify", "index": "cmd_index",
    "snapshot": "cmd_snapshot", "log": "cmd_log", "ls": "cmd_log", "show": "cmd_log",
    "diff": "cmd_diff", "status": "cmd_status", "restore": "cmd_restore",
    "checkout": "cmd_restore", "branch": "cmd_refs", "tag": "cmd_refs", "gc": "cmd_gc",
    "forget": "cmd_gc", "model": "cmd_model", "stores": "cmd_model", "watch": "cmd_watch",
    "policy": "cmd_policy", "maintain": "cmd_maintain", "report": "cmd_report",
    "repair": "cmd_repair", "audit": "cmd_audit", "key": "cmd_key", "copy": "cmd_copy",
    "purge": "cmd_purge",
}


class _CommandGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*COMMAND_MODULES, "help"])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name == "help":
            return help_command
        module_name = COMMAND_MODULES.get(name)
        if module_name is None:
            return None
        module = importlib.import_module(f".{module_name}", __package__)
        commands = getattr(module, "commands", None) or [module.command]
        return next(c for c in commands if c.name == name)

    def invoke(self, ctx: click.Context):
        """Run the command, then record it in the store's audit trail when it
        read content or changed the store (the one place this is done)."""
        try:
            result = super().invoke(ctx)
        except BaseException as e:
            record_command(getattr(ctx.obj, "audit", None), _exit_code_of(e),
                           str(e) or type(e).__name__)
            raise
        record_command(getattr(ctx.obj, "audit", None), result if isinstance(result, int) else 0, None)
        return result


def _exit_code_of(e: BaseException) -> int:
    if isinstance(e, CasError):
        return e.exit_code
    if isinstance(e, click.exceptions.Exit):
        return e.exit_code
    if isinstance(e, click.ClickException):
        return EXIT_USAGE
    if isinstance(e, (KeyboardInterrupt, click.exceptions.Abort)):
        return 130
    return 70 if not isinstance(e, OSError) else EXIT_PROBLEM_FOUND


def unknown_command(ctx: click.Context, name: str) -> UnknownCommand:
    """The one error for a command name no group has, whichever group it was
    given to (the lazy top level lists names click's own suggestion cannot see)."""
    group = ctx.command
    names = group.list_commands(ctx) if isinstance(group, click.Group) else []
    return UnknownCommand(name, ctx.command_path, nearest_names(name, names))


def nearest_names(name: str, names: list[str]) -> list[str]:
    """The names within a typo's reach of ``name``: one edit or swap of two
    neighbouring letters per three letters typed (at least one), as git's
    suggestions allow, or names ``name`` is the start of."""
    reach = max(1, len(name) // 3)
    scored = [(_edit_distance(name, n), n) for n in names]
    best = min((d for d, _ in scored), default=reach + 1)
    # Among equals, the names as long as what was typed first: 'stauts' is
    # more likely 'status' than 'stats'.
    close = sorted((n for d, n in scored if d == best and d <= reach),
                   key=lambda n: abs(len(n) - len(name)))
    return close or [n for n in names if len(name) >= 3 and n.startswith(name)]


def _edit_distance(a: str, b: str) -> int:
    """Edits (insert, delete, replace, swap of neighbours) turning a into b."""
    before, row = None, list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            current[j] = min(row[j] + 1, current[j - 1] + 1, row[j - 1] + (ca != cb))
            if before is not None and i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], before[j - 2] + 1)
        before, row = row, current
    return row[-1]


@click.command("help")
@click.argument("words", metavar="[COMMAND]...", nargs=-1)
@click.pass_context
def help_command(ctx: click.Context, words: tuple[str, ...]) -> None:
    """Show a command's help: 'cas help log' is 'cas log --help'.

    \b
    Examples:
      cas help model import
    """
    at = ctx.parent or ctx
    for word in words:
        group = at.command
        if not isinstance(group, click.Group):
            raise ArgumentsConflict(f"{at.command_path} has no subcommand '{word}' "
                                    f"(see '{at.command_path} --help')")
        command = group.get_command(at, word)
        if command is None:
            raise unknown_command(at, word)
        at = click.Context(command, info_name=word, parent=at)
    click.echo(at.get_help(), color=at.color)


@click.group(cls=_CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", "store_path", envvar="CAS_STORE", metavar="PATH",
              type=click.Path(file_okay=False, path_type=str),
              help="Store to use (default: the nearest .cas/ above the current directory). "
                   "Also read from CAS_STORE.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or summaries.")
@click.version_option(package_name="cas", prog_name="cas")
@click.pass_context
def cli(ctx: click.Context, store_path: str | None, quiet: bool) -> None:
    """cas: a content-addressed store for data directories and model files.

    \b
    Examples:
      cas init && cas snapshot -m first
      cas log --oneline -n 5
    """
    ctx.obj = Context(store_path, quiet, ctx.obj if isinstance(ctx.obj, AuditNotes) else None)
    keys.set_password_source(store_passphrase)


def store_passphrase() -> bytes | None:
    """An encrypted store's passphrase, asked for only when one is opened:
    CAS_PASSWORD, CAS_PASSWORD_FILE or CAS_PASSWORD_COMMAND, else typed on
    the terminal stdin is; None when there is no way to get one."""
    given = environment_source()
    if given is None and sys.stdin.isatty():
        given = ask_passphrase("Passphrase of the store: ") or None
    return given


def ask_passphrase(prompt: str) -> bytes:
    """A line typed on the terminal without echo (empty at end of input)."""
    import getpass
    try:
        return os.fsencode(getpass.getpass(prompt))
    except EOFError:
        return b""


def main(argv: list[str] | None = None) -> None:
    # A snapshot allocates millions of small objects that never form cycles
    # (tree entries, index entries); with the default thresholds the cyclic
    # collector rescans them over and over, about 10% of a first snapshot's
    # time. Everything imported so far is frozen out of its reach too.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    _keep_buffers_mapped()
    sys.exit(run(argv))


def _keep_buffers_mapped() -> None:
    """Fix glibc's malloc thresholds for chunk-sized buffers.

    Files are read and compressed in blocks of up to 4 MiB. With glibc's
    adaptive thresholds those blocks were often mapped and unmapped one by
    one, each time as fresh pages for the kernel to zero: a first snapshot
    of the benchmark corpus took 80,000-100,000 page faults and 2 s of system
    time, and far more when the page cache had filled memory. Fixed at
    32 MiB (mapping) and 64 MiB (trimming), freed blocks are reused: 27,000
    faults, 1.4 s. Elsewhere than glibc nothing is changed.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 64 << 20)


def _click_exit(e: click.ClickException | click.exceptions.Exit) -> int:
    """The exit code of click's own outcomes, its usage errors said in one place."""
    if isinstance(e, click.exceptions.Exit):
        return e.exit_code
    if isinstance(e, click.exceptions.NoSuchCommand):
        # One line with the nearest names, from every group alike.
        error_line(str(unknown_command(e.ctx, e.command_name)) if e.ctx else e.format_message())
        return EXIT_USAGE
    e.show()
    return EXIT_USAGE


def run(argv: list[str] | None = None) -> int:
    try:
        args = list(sys.argv[1:] if argv is None else argv)
        result = cli.main(args=args, prog_name="cas", standalone_mode=False,
                          obj=AuditNotes(args))
        return result if isinstance(result, int) else 0
    except (click.exceptions.Abort, KeyboardInterrupt):
        error_line("interrupted")
        return 130
    except (click.ClickException, click.exceptions.Exit) as e:
        return _click_exit(e)
    except CasError as e:
        error_line(str(e))
        return e.exit_code
    except BrokenPipeError:
        # The reader went away (`cas objects | head`): not an error. Later
        # writes (flushing at exit) go nowhere; the file stays open until exit.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        return 0
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        error_line(f"{e.strerror or e}{where}")
        # A write that failed is a problem found (exit 1), like StoreWriteError.
        failed_write = (errno.EIO, errno.ENOSPC, errno.EDQUOT, errno.EROFS)
        return EXIT_PROBLEM_FOUND if e.errno in failed_write else EXIT_USAGE
    except Exception as e:  # a bug: still one line, with a way to get details
        if os.environ.get("CAS_DEBUG"):
            raise
        error_line(f"internal error: {type(e).__name__}: {e} (set CAS_DEBUG=1 for details)")
        return 70
