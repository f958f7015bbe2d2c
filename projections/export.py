"""Export of the projection as Parquet files, one a table, for DuckDB, pandas and Polars."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any

import duckdb

from events.errors import ClaudeDoError, Invalid
from projections.projector import Projection
from projections.queries import shown

# Rows handed from the projection to the writer at a time: the export holds one batch of
# Arrow columns in memory, not a whole table.
_BATCH_ROWS = 100_000


def exported_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The tables an export writes: every table of the projection but its bookkeeping
    (`projection_checkpoint`, `projection_format`), in name order."""
    rows = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "AND NOT starts_with(table_name, 'projection_') ORDER BY table_name"
    ).fetchall()
    return [r[0] for r in rows]


def export_parquet(p: Projection, folder: Path) -> dict[str, Any]:
    """Write each exported table to `<folder>/<table>.parquet`, all from one state of the
    projection (its checkpoint is in the reply); `folder` is made if missing.

    Refuses (Invalid, nothing written) a folder that is not absolute, is not a folder, cannot
    be made, or is not empty: the files of an export are of one checkpoint, never mixed with
    others, and no file is replaced. They are written under temporary names first, then
    linked to theirs, which fails rather than replace a file that appeared meanwhile.

    The projection's connection has file access off (`claudedo sql` must not reach files),
    so the files are written by a DuckDB of their own (in memory), which reads the tables as
    Arrow batches and writes them with its COPY ... (FORMAT parquet).
    """
    tables = exported_tables(p.con)
    targets = {t: folder / f"{t}.parquet" for t in tables}
    _prepare(folder)
    token = secrets.token_hex(6)
    temps = {t: folder / f".{t}.parquet.{token}.partial" for t in tables}
    linked: list[Path] = []
    counts: dict[str, int] = {}
    cur = p.con.cursor()
    writer = duckdb.connect(":memory:")
    try:
        cur.execute("BEGIN TRANSACTION READ ONLY")
        checkpoint = cur.execute(
            "SELECT seq FROM projection_checkpoint WHERE name = 'main'"
        ).fetchall()
        for table in tables:
            reader = cur.sql(f'SELECT * FROM "{table}"').to_arrow_reader(_BATCH_ROWS)
            writer.register("rows", reader)
            try:
                copied = writer.execute(
                    f"COPY rows TO {_literal(temps[table])} (FORMAT parquet)"
                ).fetchall()
            finally:
                writer.unregister("rows")
            counts[table] = int(copied[0][0]) if copied else 0
            os.chmod(temps[table], 0o600)  # prompts, results, paths: as private as the home
        for table in tables:
            _place(temps[table], targets[table])
            linked.append(targets[table])
    except (OSError, duckdb.IOException) as exc:
        for path in linked:
            path.unlink(missing_ok=True)
        detail = exc.strerror if isinstance(exc, OSError) else " ".join(str(exc).split())
        raise ClaudeDoError(f"the export to {shown(str(folder), 200)} failed: {detail}") from None
    except BaseException:
        for path in linked:
            path.unlink(missing_ok=True)
        raise
    finally:
        with contextlib.suppress(duckdb.Error):
            cur.execute("ROLLBACK")
        cur.close()
        writer.close()
        for path in temps.values():
            path.unlink(missing_ok=True)
    return {
        "dir": str(folder),
        "checkpoint_seq": int(checkpoint[0][0]) if checkpoint else 0,
        "files": [{"table": t, "path": str(targets[t]), "rows": counts[t]} for t in tables],
    }


def _prepare(folder: Path) -> None:
    """The folder exists (made if missing) and is empty."""
    where = shown(str(folder), 200)
    if not folder.is_absolute():
        raise Invalid(f"export folder {where} is not an absolute path")
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise Invalid(f"{where} exists and is not a folder") from None
    except OSError as exc:
        raise Invalid(f"cannot make the export folder {where}: {exc.strerror}") from None
    if not folder.is_dir():
        raise Invalid(f"{where} exists and is not a folder")
    try:
        with os.scandir(folder) as entries:
            empty = next(entries, None) is None
    except OSError as exc:
        raise Invalid(f"cannot read the export folder {where}: {exc.strerror}") from None
    if not empty:
        raise Invalid(f"export folder {where} is not empty: give a new or empty folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise Invalid(f"cannot write to the export folder {where}: permission denied")


def _place(temp: Path, target: Path) -> None:
    """Give the written file its name, never replacing a file that appeared meanwhile."""
    try:
        os.link(temp, target)
    except FileExistsError:
        raise Invalid(
            f"{shown(str(target), 200)} appeared during the export; nothing was written"
        ) from None
    except OSError:
        # A file system without hard links: a rename, after a last look.
        if target.exists():
            raise Invalid(
                f"{shown(str(target), 200)} appeared during the export; nothing was written"
            ) from None
        os.rename(temp, target)


def _literal(path: Path) -> str:
    """A path as an SQL string literal (COPY takes no parameters)."""
    return "'" + str(path).replace("'", "''") + "'"
