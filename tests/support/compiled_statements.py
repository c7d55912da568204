"""One cache of compiled SQL for every engine a test process makes.

SQLAlchemy keeps the SQL it compiled from a statement in a cache of the engine's own, keyed by
the engine's dialect object. A service keeps its engines for its whole life, so it compiles each
statement once; a test makes a new app, so new engines, and compiled every statement it ran
again: about a quarter of the CPU of the service's tests (py-spy, ADR 0126). Here the engines of
one test process share a cache, keyed by what a dialect is (its class and its settings) rather
than by which object it is: two engines of one backend made by `locker_service.db.create_engine`
compile every statement to the same SQL, so either one's compiled form serves the other.
"""

from __future__ import annotations

import weakref
from typing import Any

from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.orm import Mapper
from sqlalchemy.util import LRUCache

_PLAIN = (str, int, float, bool, type(None))
# What else a dialect holds: objects of its own, made alike for every engine of its class (its
# DB-API adapter, identifier preparer, type compiler, memo of type adaptations). A dialect that
# holds anything more (a JSON serializer given to its engine, say) is shared with none.
_MACHINERY = frozenset(
    {
        "dbapi",
        "loaded_dbapi",
        "identifier_preparer",
        "type_compiler",
        "type_compiler_instance",
        "_type_memos",
    }
)


def _plain(value: object) -> bool:
    if isinstance(value, tuple):
        return all(_plain(item) for item in value)
    return isinstance(value, _PLAIN)


_signatures: weakref.WeakKeyDictionary[Dialect, tuple[object, ...]] = weakref.WeakKeyDictionary()


def signature(dialect: Dialect) -> object:
    """What a dialect compiles by: its class and its plain settings (the server's version among
    them, set when it first connected, before it compiles anything); the dialect itself if it
    holds anything else."""
    known = _signatures.get(dialect)
    if known is None:
        attributes = vars(dialect)
        if any(not _plain(v) and k not in _MACHINERY for k, v in attributes.items()):
            known = ()  # (held weakly: the dialect itself is returned below)
        else:
            plain = sorted((k, v) for k, v in attributes.items() if _plain(v))
            known = (type(dialect), tuple(plain))
        _signatures[dialect] = known
    return known or dialect


class SharedCompiledCache(LRUCache[Any, Any]):
    """An LRU cache of compiled statements whose keys name a dialect by its signature."""

    def get(self, key: Any, default: Any = None) -> Any:
        return super().get((signature(key[0]), *key[1:]), default)

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__((signature(key[0]), *key[1:]), value)


SHARED = SharedCompiledCache(5000)


def _engine_cache(engine: Engine) -> Any:
    return engine.__dict__.get("_shared_compiled_cache")


def _set_engine_cache(engine: Engine, cache: Any) -> None:
    engine.__dict__["_shared_compiled_cache"] = None if cache is None else SHARED


def share_compiled_statements() -> None:
    """Every engine made from now on in this process uses the shared cache (unless made with
    `query_cache_size=0`, which keeps its having none), and so do the ORM's writes, which
    compile through a cache of each mapper's.

    The engine's cache is the one its `__init__` sets: a property on the class takes that
    assignment, so `Engine.__init__` (whose parameters `create_engine` reads to sort its
    keywords) is left as it is."""
    Engine._compiled_cache = property(_engine_cache, _set_engine_cache)  # type: ignore[assignment]
    Mapper._compiled_cache = SHARED  # type: ignore[assignment]
