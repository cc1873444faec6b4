"""SQLite persistence for `--data-dir`: every acknowledged write is committed before the reply.

One row per object (the JSON as served) plus the global resourceVersion counter. Writes go
through synchronously from the event loop: each is a single-row upsert in WAL mode, far cheaper
than the HTTP round trip around it, and it means a reply is never sent for a change that a
crash could lose.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    grp TEXT NOT NULL, resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    rv INTEGER NOT NULL, body BLOB NOT NULL,
    PRIMARY KEY (grp, resource, namespace, name)
);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
"""


class SQLiteBackend:
    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / "kubeapi.sqlite3"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before we answer, so "acknowledged" survives even a power cut.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def load(self) -> tuple[int, Iterator[tuple[str, str, bytes]]]:
        row = self._db.execute("SELECT v FROM meta WHERE k='rv'").fetchone()
        rv = int(row[0]) if row else 0
        rows = self._db.execute("SELECT grp, resource, body FROM objects ORDER BY rv")
        return rv, ((g, r, bytes(b)) for g, r, b in rows)

    def put(self, group: str, resource: str, namespace: str, name: str, rv: int, body: bytes) -> None:
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO objects (grp, resource, namespace, name, rv, body) VALUES (?,?,?,?,?,?)",
                (group, resource, namespace, name, rv, body),
            )
            self._db.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('rv', ?)", (str(rv),))

    def delete(self, group: str, resource: str, namespace: str, name: str, rv: int) -> None:
        with self._tx():
            self._db.execute(
                "DELETE FROM objects WHERE grp=? AND resource=? AND namespace=? AND name=?",
                (group, resource, namespace, name),
            )
            self._db.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('rv', ?)", (str(rv),))

    def _tx(self) -> _Tx:
        return _Tx(self._db)

    def close(self) -> None:
        self._db.close()


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
