"""Client CPU of a confirmation-shaped transaction through psycopg and through asyncpg.

    uv run --with asyncpg python scripts/compare_drivers.py

Not part of the service (asyncpg is not a dependency): it measures what switching the
repositories' driver would save. Starts an embedded Postgres in a temporary directory, fills a
table of 60,000 rows shaped like reservations (22 columns), then runs, with 16 connections on
uvloop, transactions of the shape of a ConfirmPayment: lock the row, read it, update it with
RETURNING of every column, commit. psycopg sends the lock and the read in one pipeline, as
`transaction.py` does; asyncpg sends them one after the other. Prints transactions/s and this
process's CPU per transaction, alternating the drivers twice.
"""

# ruff: noqa: S608 - the SQL is built from this file's own constant column names only

from __future__ import annotations

import asyncio
import resource
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import pgserver
import psycopg
import uvloop
from psycopg.rows import namedtuple_row

TRANSACTIONS = 6000
CONNECTIONS = 16
TEXT_COLUMNS = [f"c{i}" for i in range(18)]
SELECTED = "id, status, amount, ts, " + ", ".join(TEXT_COLUMNS)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def with_psycopg(uri: str, ids: list[str]) -> None:
    lock = "SELECT id FROM t WHERE id = %(id)s FOR UPDATE"
    read = f"SELECT {SELECTED}, now() AS db_now FROM t WHERE id = %(id)s"
    update = f"UPDATE t SET status = %(s)s, amount = %(a)s WHERE id = %(id)s RETURNING {SELECTED}"
    connections = [await psycopg.AsyncConnection.connect(uri) for _ in range(CONNECTIONS)]

    async def caller(conn: psycopg.AsyncConnection[object]) -> None:
        while ids:
            row_id = ids.pop()
            async with conn.pipeline():
                locked = conn.cursor(row_factory=namedtuple_row)
                current = conn.cursor(row_factory=namedtuple_row)
                await locked.execute(lock, {"id": row_id})
                await current.execute(read, {"id": row_id})
            await locked.fetchone()
            await current.fetchone()
            changed = conn.cursor(row_factory=namedtuple_row)
            await changed.execute(update, {"id": row_id, "s": "confirmed", "a": 5})
            await changed.fetchone()
            await conn.commit()

    await asyncio.gather(*(caller(c) for c in connections))
    for conn in connections:
        await conn.close()


async def with_asyncpg(uri: str, ids: list[str]) -> None:
    lock = "SELECT id FROM t WHERE id = $1 FOR UPDATE"
    read = f"SELECT {SELECTED}, now() AS db_now FROM t WHERE id = $1"
    update = f"UPDATE t SET status = $2, amount = $3 WHERE id = $1 RETURNING {SELECTED}"
    connections = [await asyncpg.connect(uri) for _ in range(CONNECTIONS)]

    async def caller(conn: asyncpg.Connection) -> None:
        while ids:
            row_id = uuid.UUID(ids.pop())
            async with conn.transaction():
                await conn.fetchrow(lock, row_id)
                await conn.fetchrow(read, row_id)
                await conn.fetchrow(update, row_id, "confirmed", 5)

    await asyncio.gather(*(caller(c) for c in connections))
    for conn in connections:
        await conn.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        server = pgserver.get_server(scratch, cleanup_mode="stop")
        uri = server.get_uri()
        random_texts = ", ".join("md5(random()::text)" for _ in TEXT_COLUMNS)
        server.psql(
            "CREATE TABLE t (id uuid PRIMARY KEY, status text, amount bigint,"
            f" ts timestamptz DEFAULT now(), {', '.join(c + ' text' for c in TEXT_COLUMNS)});"
            f" INSERT INTO t SELECT gen_random_uuid(), 'pending', 100, now(), {random_texts}"
            " FROM generate_series(1, 60000);"
        )
        ids = [line.strip() for line in server.psql("SELECT id FROM t").splitlines()[2:-2]]
        drivers: list[tuple[str, Callable[[str, list[str]], Awaitable[None]]]] = [
            ("psycopg", with_psycopg),
            ("asyncpg", with_asyncpg),
        ] * 2
        for n, (name, run) in enumerate(drivers):
            chunk = ids[n * 2 * TRANSACTIONS : (n + 1) * 2 * TRANSACTIONS]
            uvloop.run(run(uri, chunk[: TRANSACTIONS // 3]))  # connections warm, plans cached
            began_cpu, began = cpu_seconds(), time.perf_counter()
            uvloop.run(run(uri, chunk[TRANSACTIONS:]))
            seconds = time.perf_counter() - began
            cpu_ms = (cpu_seconds() - began_cpu) * 1000 / TRANSACTIONS
            print(f"{name}: {TRANSACTIONS / seconds:7.0f} txns/s, client CPU {cpu_ms:.3f} ms/txn")
        server.cleanup()


if __name__ == "__main__":
    main()
