"""Opening a projection file: schema from the SQL files, UTC, the checkpoint row."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import duckdb
import pyarrow as pa

_ARROW_TYPES: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(),
    "JSON": pa.string(),
    "BIGINT": pa.int64(),
    "INTEGER": pa.int32(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "TIMESTAMP WITH TIME ZONE": pa.timestamp("us", tz="UTC"),
    "VARCHAR[]": pa.list_(pa.string()),
}


def schema_sql() -> list[str]:
    """The schema files' text, in file name order."""
    folder = resources.files("projections") / "sql"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(folder / n).read_text() for n in names]


# The shape of the projection's tables. A file of another format is out of date: it is
# derived, so the node drops it and builds it again from the log (a new column, a new fold).
FORMAT_VERSION = 4


def format_of(path: Path | str) -> int | None:
    """The format a projection file was written with (1: before formats were recorded), or
    None when there is no such file or it holds no projection."""
    if not Path(path).exists():
        return None
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        tables = {r[0] for r in rows}
        if "projection_checkpoint" not in tables:
            return None
        if "projection_format" not in tables:
            return 1
        row = con.execute("SELECT version FROM projection_format").fetchone()
        return int(row[0]) if row else 1
    finally:
        con.close()


def drop_if_out_of_date(path: Path | str) -> int | None:
    """Remove a projection file (and its WAL) of another format; returns that format."""
    found = format_of(path)
    if found is None or found == FORMAT_VERSION:
        return None
    for p in (Path(path), Path(f"{path}.wal")):
        p.unlink(missing_ok=True)
    return found


def open_db(path: Path | str, allowed: Sequence[Path] = ()) -> duckdb.DuckDBPyConnection:
    """Open (creating if needed) a projection file with every table present.

    File and network access are off: the projector only reads Arrow tables it registers, and
    `claudedo sql` must not reach outside the projection. The folders `allowed` are the
    exception: the projection's own snapshots and past states (projections/snapshots.py).
    """
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    for sql in schema_sql():
        con.execute(sql)
    if not con.execute("SELECT count(*) FROM projection_checkpoint").fetchone()[0]:  # type: ignore[index]
        con.execute("INSERT INTO projection_checkpoint VALUES ('main', 0)")
        con.execute("DELETE FROM projection_format")
        con.execute("INSERT INTO projection_format VALUES (?)", [FORMAT_VERSION])
    if allowed:
        folders = ", ".join(
            "'" + (str(f).rstrip("/") + "/").replace("'", "''") + "'" for f in allowed
        )
        con.execute(f"SET allowed_directories = [{folders}]")
    con.execute("SET enable_external_access = false")
    return con


def arrow_schema(con: duckdb.DuckDBPyConnection, table: str) -> pa.Schema:
    """The Arrow schema matching a table's columns, in table order."""
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = ? ORDER BY ordinal_position",
        [table],
    ).fetchall()
    return pa.schema([(name, _ARROW_TYPES[dtype]) for name, dtype in rows])


def checkpoint_of(con: duckdb.DuckDBPyConnection) -> int:
    row = con.execute("SELECT seq FROM projection_checkpoint WHERE name = 'main'").fetchone()
    return int(row[0]) if row else 0


# Up to this many ids are matched with a filter, more with a join. Each DuckDB hash join
# allocates buffer blocks whose handles linger in DuckDB's eviction queue; the projector ran a
# few such joins per batch, and the node's memory grew with every finished task
# (docs/benchmarks.md, "Node memory"). A filter allocates none, and costs a comparison per id
# per row, hence the limit.
FILTER_MAX_IDS = 64


def in_ids(column: str, n: int) -> str:
    """A condition matching `column` against the VARCHAR[] parameter of `n` ids."""
    if n <= FILTER_MAX_IDS:
        return f"list_contains(?::VARCHAR[], {column})"
    return f"{column} IN (SELECT unnest(?::VARCHAR[]))"
