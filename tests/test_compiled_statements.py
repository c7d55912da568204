"""The test processes' shared cache of compiled SQL (tests/support/compiled_statements.py): what
one test's engine compiled serves the next test's engine of the same backend, the ORM's writes
included, and never an engine of another backend."""

from __future__ import annotations

import functools
import json
import uuid
from pathlib import Path

import pytest
from sqlalchemy import literal_column, select
from sqlalchemy.engine.default import DefaultDialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.compiler import Compiled

from locker_service.db import create_engine, create_sessionmaker, session_scope
from locker_service.models import Site
from tests.support.databases import drop_pg_database, migrated_database


async def _write_and_read(engine: AsyncEngine, marker: str) -> object:
    """An ORM insert (compiled through its mapper's cache) and a select of this test's own
    (through the engine's); how the select was found in the cache."""
    async with session_scope(create_sessionmaker(engine)) as session:
        session.add(Site(code=f"site-{uuid.uuid4().hex[:8]}", name="Tower"))
        await session.flush()
        connection = await session.connection()
        result = await connection.execute(select(Site.id, literal_column(f"'{marker}'")))
        return result.context.cache_hit


async def test_each_backend_compiles_a_statement_once_for_every_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled = [0]
    real_init = Compiled.__init__

    def counting_init(self: Compiled, *args: object, **kwargs: object) -> None:
        compiled[0] += 1
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Compiled, "__init__", counting_init)
    marker = uuid.uuid4().hex  # a statement no other test compiled
    hit, miss = DefaultDialect.CACHE_HIT, DefaultDialect.CACHE_MISS
    seen = []
    for backend in ("sqlite", "postgres"):
        for name in ("a", "b"):
            (tmp_path / backend / name).mkdir(parents=True)
            url = migrated_database(backend, tmp_path / backend / name)
            engine = create_engine(url)
            try:
                before = compiled[0]
                seen.append((await _write_and_read(engine, marker), compiled[0] - before))
            finally:
                await engine.dispose()
                if backend == "postgres":
                    drop_pg_database(url)
    # First engine of a backend: the select is new (one entry at least; the insert too if no
    # test before compiled it). Its second engine compiles nothing at all.
    assert seen[0][0] == miss and seen[0][1] >= 1
    assert seen[1] == (hit, 0)
    assert seen[2][0] == miss and seen[2][1] >= 1  # never the SQLite form for PostgreSQL
    assert seen[3] == (hit, 0)


async def test_an_engine_whose_dialect_holds_more_compiles_its_own(tmp_path: Path) -> None:
    """Dialects given something of their own (here each a JSON serializer of its own) may
    compile differently: they share nothing."""
    marker = uuid.uuid4().hex
    hits = []
    serializers = {"a": json.dumps, "b": functools.partial(json.dumps, sort_keys=True)}
    for name, serializer in serializers.items():
        (tmp_path / name).mkdir()
        engine = create_engine(
            migrated_database("sqlite", tmp_path / name), json_serializer=serializer
        )
        try:
            hits.append(await _write_and_read(engine, marker))
        finally:
            await engine.dispose()
    assert hits == [DefaultDialect.CACHE_MISS, DefaultDialect.CACHE_MISS]


async def test_engines_keep_every_option_of_their_own(tmp_path: Path) -> None:
    """`create_engine` sorts its keywords by `Engine.__init__`'s parameters: the shared cache
    leaves them as they are, and an engine made with no cache keeps none."""
    url = migrated_database("sqlite", tmp_path)
    engine = create_engine(url, echo=True, logging_name="mine", query_cache_size=0)
    try:
        assert (engine.echo, engine.sync_engine.logging_name) == (True, "mine")
        assert engine.sync_engine._compiled_cache is None
        async with engine.connect() as connection:
            result = await connection.execute(select(literal_column("1")))
            assert result.context.cache_hit == DefaultDialect.CACHING_DISABLED
    finally:
        await engine.dispose()
