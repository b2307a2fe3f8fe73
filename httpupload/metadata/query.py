"""The SQL stores' one query layer: every ``MetadataStore`` operation, once.

The SQLite and PostgreSQL stores differ in two things only, and neither is
here: how work reaches a connection (their threads, connections and
transactions: ``SQLStore._run``) and the text of their SQL, which is package
data, one file per dialect (``sqlite.sql``, ``postgresql.sql``).

A dialect's file is a list of named queries, each started by a line
``-- name: <name>``.  A query is zero or more statements separated by ``;``
(an empty one is nothing to do, e.g. SQLite's locks: its transactions are
serial already); several run in one transaction and the query answers with
the rows of the last statement that returns rows.  Parameters are named, in
the dialect's style.  In the text, ``{columns}`` are the record's columns in
``FileRecord`` order (``{files_columns}`` qualified by the table),
``{values}`` their parameters, and ``{name}`` the query of that name (a
fragment, if the name starts with ``_``).  Full-line ``--`` comments are left
out.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, succeed

from httpupload.metadata import (
    ALL_USAGE,
    RECORD_COLUMNS,
    FileRecord,
    Grant,
    Usage,
    UsageNeeds,
)

T = TypeVar("T")
Params = Mapping[str, Any]

# What a dialect's file must define for SQLStore (a dialect may define more,
# for its own store: PostgreSQL's schema_version queries).
OPERATIONS = (
    "lock_owner",
    "lock_global",
    "insert",
    "window",
    "held",
    "pending",
    "global_bytes",
    "usage_by_owner",
    "get",
    "complete",
    "extend_slot",
    "delete",
    "list_owner",
    "owner_records",
    "delete_owner",
    "due",
    "claim_due",
    "hold",
    "all_ids",
    "incomplete_ids",
)

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_REFERENCE = re.compile(r"\{(\w+)\}")


class Cursor(Protocol):
    """What the query layer uses of a DB-API cursor (sqlite3's, psycopg's)."""

    @property
    def description(self) -> Any: ...

    def execute(self, query: str, params: Params, /) -> Any: ...

    def executemany(self, query: str, params: Iterable[Params], /) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """A DB-API connection: all the query layer needs is a cursor."""

    def cursor(self) -> Cursor: ...


@dataclass(frozen=True)
class Dialect:
    """One dialect's queries: name -> statements, ready to run."""

    name: str
    queries: Mapping[str, tuple[str, ...]]

    @classmethod
    def load(cls, resource: str, param: Callable[[str], str]) -> Dialect:
        """Read ``httpupload/metadata/<resource>``; ``param(name)`` writes a
        named parameter in the dialect's style (``:name``, ``%(name)s``)."""
        text = files("httpupload.metadata").joinpath(resource).read_text("utf-8")
        return cls.parse(resource, text, param)

    @classmethod
    def parse(cls, name: str, text: str, param: Callable[[str], str]) -> Dialect:
        """The queries of ``text`` (the format in this module's docstring)."""
        parts = _NAME.split(text)
        raw: dict[str, str] = {}
        for query, body in zip(parts[1::2], parts[2::2], strict=True):
            if query in raw:
                raise ValueError(f"{name}: query {query!r} is defined twice")
            raw[query] = "\n".join(
                line
                for line in body.splitlines()
                if line.strip() and not line.lstrip().startswith("--")
            )
        builtins = {
            "columns": ", ".join(RECORD_COLUMNS),
            "files_columns": ", ".join(f"files.{c}" for c in RECORD_COLUMNS),
            "values": ", ".join(param(c) for c in RECORD_COLUMNS),
        }

        def expand(match: re.Match[str]) -> str:
            key = match.group(1)
            if key in builtins:
                return builtins[key]
            if key not in raw:
                raise ValueError(f"{name}: no query {key!r} to put in its place")
            return _REFERENCE.sub(expand, raw[key])

        queries = {
            query: tuple(
                s.strip() for s in _REFERENCE.sub(expand, body).split(";") if s.strip()
            )
            for query, body in raw.items()
            if not query.startswith("_")
        }
        missing = [q for q in OPERATIONS if q not in queries]
        if missing:
            raise ValueError(f"{name}: no query for {', '.join(missing)}")
        return cls(name, queries)

    @property
    def migrations(self) -> tuple[tuple[str, ...], ...]:
        """The schema's upgrades, ``migration_1`` onwards: entry ``n`` upgrades
        from version ``n`` to ``n + 1``."""
        steps: list[tuple[str, ...]] = []
        while (key := f"migration_{len(steps) + 1}") in self.queries:
            steps.append(self.queries[key])
        return tuple(steps)

    def transactional(self, query: str) -> bool:
        """Whether ``query`` needs a transaction (it has several statements)."""
        return len(self.queries[query]) > 1


def rows(dialect: Dialect, conn: Connection, query: str, params: Params) -> list[Any]:
    """Run ``query``'s statements on ``conn``; the rows of the last that has any.

    A query of several statements needs the caller's transaction around it.
    """
    answer: list[Any] = []
    cursor = conn.cursor()
    for statement in dialect.queries[query]:
        cursor.execute(statement, params)
        if cursor.description is not None:
            answer = cursor.fetchall()
    return answer


def owner_lock_key(owner: str) -> int:
    """A stable 32-bit key for the owner's lock, in dialects that lock per
    owner (collisions only make two owners wait for each other)."""
    digest = hashlib.sha256(owner.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


def usage(
    dialect: Dialect,
    conn: Connection,
    owner: str,
    now: float,
    window_seconds: float,
    needs: UsageNeeds = ALL_USAGE,
) -> Usage:
    """The owner's usage at ``now``: only the parts ``needs`` asks for."""
    params = {"owner": owner, "now": now, "start": now - window_seconds}
    window: tuple[Grant, ...] = ()
    if needs.window:
        window = tuple(
            Grant(at, size, purpose, expires)
            for at, size, purpose, expires in rows(dialect, conn, "window", params)
        )
    held: dict[str, int] = {}
    pending: tuple[float, ...] = ()
    if needs.held:
        held = {p: size for p, size in rows(dialect, conn, "held", params)}
        pending = tuple(e for (e,) in rows(dialect, conn, "pending", params))
    global_bytes = 0
    if needs.global_bytes:
        ((global_bytes,),) = rows(dialect, conn, "global_bytes", params)
    return Usage(now, window, held, global_bytes, pending)


def _records(found: list[Any]) -> list[FileRecord]:
    return [FileRecord.from_row(row) for row in found]


def _record(found: list[Any]) -> FileRecord | None:
    return FileRecord.from_row(found[0]) if found else None


def _ids(found: list[Any]) -> set[str]:
    return {row[0] for row in found}


class SQLStore:
    """``MetadataStore`` over a dialect's SQL; a subclass says how work runs.

    Its ``_run`` calls ``work(connection)`` on a thread of the store's own
    and fires the Deferred with the result on the reactor thread; with
    ``transaction``, all of it in one transaction that is rolled back if
    ``work`` raises.
    """

    dialect: Dialect
    ordered: bool

    def _run(
        self, work: Callable[[Connection], T], *, transaction: bool = False
    ) -> Deferred[T]:
        raise NotImplementedError

    def _query(self, query: str, params: Params) -> Deferred[list[Any]]:
        dialect = self.dialect
        return self._run(
            lambda conn: rows(dialect, conn, query, params),
            transaction=dialect.transactional(query),
        )

    # -- reservations and usage ---------------------------------------------

    def reserve(
        self,
        record: FileRecord,
        window_seconds: float,
        check: Callable[[Usage], None],
        needs: UsageNeeds = ALL_USAGE,
    ) -> Deferred[None]:
        """Insert ``record`` if ``check(usage)`` does not raise, atomically."""
        dialect = self.dialect
        values = dict(zip(RECORD_COLUMNS, record.row(), strict=True))

        def work(conn: Connection) -> None:
            rows(
                dialect, conn, "lock_owner", {"owner_key": owner_lock_key(record.owner)}
            )
            if needs.global_bytes:
                rows(dialect, conn, "lock_global", {})
            check(
                usage(
                    dialect, conn, record.owner, record.created, window_seconds, needs
                )
            )
            rows(dialect, conn, "insert", values)

        return self._run(work, transaction=True)

    def usage(self, owner: str, now: float, window_seconds: float) -> Deferred[Usage]:
        """The owner's usage now (for the ad-hoc "my usage" command)."""
        dialect = self.dialect
        return self._run(lambda conn: usage(dialect, conn, owner, now, window_seconds))

    def usage_by_owner(self, now: float) -> Deferred[dict[str, tuple[int, int]]]:
        return self._query("usage_by_owner", {"now": now}).addCallback(
            lambda found: {owner: (count, size) for owner, count, size in found}
        )

    # -- single records -------------------------------------------------------

    def get(self, file_id: str) -> Deferred[FileRecord | None]:
        return self._query("get", {"file_id": file_id}).addCallback(_record)

    def complete(
        self, file_id: str, sha256: str, content_type: str, at: float
    ) -> Deferred[FileRecord | None]:
        """Mark an uploaded slot stored; its record as it then stands."""
        params = {
            "file_id": file_id,
            "at": at,
            "sha256": sha256,
            "content_type": content_type,
        }
        return self._query("complete", params).addCallback(_record)

    def extend_slot(self, file_id: str, until: float) -> Deferred[FileRecord | None]:
        """Keep an unfinished slot's PUT URL valid until ``until`` (never
        shorter); its record as it then stands."""
        params = {"file_id": file_id, "until": until}
        return self._query("extend_slot", params).addCallback(_record)

    def delete(self, file_id: str) -> Deferred[FileRecord | None]:
        return self._query("delete", {"file_id": file_id}).addCallback(_record)

    # -- an owner's records ---------------------------------------------------

    def list_owner(self, owner: str) -> Deferred[list[FileRecord]]:
        return self._query("list_owner", {"owner": owner}).addCallback(_records)

    def owner_records(self, owner: str) -> Deferred[list[FileRecord]]:
        return self._query("owner_records", {"owner": owner}).addCallback(_records)

    def delete_owner(self, owner: str) -> Deferred[list[FileRecord]]:
        return self._query("delete_owner", {"owner": owner}).addCallback(_records)

    # -- sweeping and reconciliation ------------------------------------------

    def due(
        self, now: float, dead_slot_after: float, limit: int
    ) -> Deferred[list[FileRecord]]:
        params = {"now": now, "dead": now - dead_slot_after, "limit": limit}
        return self._query("due", params).addCallback(_records)

    def claim_due(
        self, now: float, dead_slot_after: float, limit: int, lease_seconds: float
    ) -> Deferred[list[FileRecord]]:
        """Due records no other sweeper holds, leased in one go."""
        params = {
            "now": now,
            "dead": now - dead_slot_after,
            "limit": limit,
            "until": now + lease_seconds,
        }
        return self._query("claim_due", params).addCallback(_records)

    def hold(self, file_ids: Collection[str], until: float) -> Deferred[None]:
        """Keep these slots' records from every sweep until ``until``."""
        if not file_ids:
            return succeed(None)
        (statement,) = self.dialect.queries["hold"]
        params = [{"until": until, "file_id": i} for i in file_ids]

        def work(conn: Connection) -> None:
            conn.cursor().executemany(statement, params)

        return self._run(work, transaction=True)

    def all_ids(self) -> Deferred[set[str]]:
        return self._query("all_ids", {}).addCallback(_ids)

    def incomplete_ids(self) -> Deferred[set[str]]:
        return self._query("incomplete_ids", {}).addCallback(_ids)


__all__ = [
    "OPERATIONS",
    "Connection",
    "Cursor",
    "Dialect",
    "SQLStore",
    "owner_lock_key",
    "rows",
    "usage",
]
