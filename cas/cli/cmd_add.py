from __future__ import annotations

import click

from ..errors import EXIT_USAGE, counted
from ..ops.ingest import AddedFile, add_paths
from ..problems import ERROR, Problem
from .main import Context, json_option, pass_ctx
from .output import error_line, human_bytes, info, out_json, out_line, path_bytes, path_text, warn


@click.command("add")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@json_option("Print one JSON document instead of lines.")
@pass_ctx
def command(ctx: Context, paths: tuple[str, ...], as_json: bool) -> int:
    """Store files (directories recursively) and print their ids.

    Prints '<id>  <path>' for each file, as b3sum does: the id is the BLAKE3
    of the file's content. Files that cannot be read are reported and
    skipped (exit 2); everything else is still stored.

    \b
    Examples:
      cas add data/weights.bin
    """
    files: list[dict] = []

    def on_result(result: AddedFile | Problem) -> None:
        if isinstance(result, Problem):
            (error_line if result.severity == ERROR else warn)(
                f"{path_text(result.path)}: {result.message}")
        elif as_json:
            files.append({"path": path_text(result.path), "id": result.oid.hex, "size": result.size})
        else:
            out_line(result.oid.hex.encode() + b"  " + path_bytes(result.path))

    with ctx.open_store() as store:
        report = add_paths(store, list(paths), on_result)
    summary = {
        "files": report.files, "bytes": report.bytes, "new_objects": report.new_objects,
        "new_bytes": report.new_bytes, "stored_bytes": report.stored_bytes,
        "errors": len(report.errors),
    }
    if as_json:
        out_json({"files": files, "summary": summary, "problems": [
            {"path": path_text(p.path), "message": p.message, "severity": p.severity}
            for p in report.problems]})
    else:
        info(f"{counted(report.files, 'file')}, {human_bytes(report.bytes)}; "
             f"{counted(report.new_objects, 'new object')}, {human_bytes(report.new_bytes)} new "
             f"({human_bytes(report.stored_bytes)} stored)", ctx.quiet)
    if report.errors:
        error_line(f"{counted(len(report.errors), 'path')} could not be stored (see above)")
        return EXIT_USAGE
    return 0
