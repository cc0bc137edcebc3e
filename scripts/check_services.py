"""Check that Redis and Postgres answer, and create the Postgres database named in DATABASE_URL if missing.

Used by scripts/run.sh before anything starts, so a missing service is one clear message, not a traceback.
Exit status: 0 ready, 1 a service is unreachable (the message says which and how to fix it).
"""

from __future__ import annotations

import os
import sys
from urllib.parse import unquote, urlparse

import psycopg
import redis
from psycopg import sql


def check_redis(url: str) -> str | None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
    except redis.RedisError as exc:
        return f"Redis is unreachable at {url} ({exc}). Start it (e.g. `redis-server`) or set REDIS_URL."
    return None


def ensure_database(url: str) -> str | None:
    parsed = urlparse(url)
    name = unquote(parsed.path.lstrip("/")) or "frontdoor"
    params = {
        "host": parsed.hostname or "127.0.0.1",
        "port": parsed.port or 5432,
        "user": unquote(parsed.username or "postgres"),
        "password": unquote(parsed.password or ""),
        "connect_timeout": 3,
    }
    try:
        with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:  # type: ignore[arg-type]
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                print(f"created Postgres database {name!r}")
    except psycopg.Error as exc:
        where = f"{params['host']}:{params['port']} as {params['user']}"
        return f"Postgres is unreachable at {where} ({str(exc).strip()}). Start it or set DATABASE_URL."
    return None


def main() -> int:
    problems = [
        problem
        for problem in (
            check_redis(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")),
            ensure_database(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/frontdoor")),
        )
        if problem
    ]
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
