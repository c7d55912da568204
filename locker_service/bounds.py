"""What every input must keep to be storable: integers the columns hold, text without NUL.

PostgreSQL's `integer` ends at 2**31 - 1 and its `text` cannot hold U+0000; asyncpg raises on
either, which would surface as a 500. Every request body's text field and every id in a path or
query goes through the types here, so what the database cannot hold is a 422 before any query.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

INT4_MAX = 2**31 - 1  # PostgreSQL `integer`: the id columns of sites, kiosks, compartments, ...
INT8_MAX = 2**63 - 1  # PostgreSQL `bigint`: the id columns of deliveries, openings, events, ...
NUL = "\x00"


def refuse_nul(value: str) -> str:
    """`value` unchanged, or a validation error if it holds a NUL character."""
    if NUL in value:
        raise ValueError("must not contain a NUL character")
    return value


# Text from outside: any request body's string field, a search term, a code typed at a kiosk.
Text = Annotated[str, AfterValidator(refuse_nul)]
