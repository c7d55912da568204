"""No pickup token in any log line: `/p/<token>` paths are logged as `/p/<redacted>`.

A purchaser's page address is a bearer secret (its token opens the compartment), and every
request for it, or for `/api/v1/p/<token>` and its QR image, would otherwise sit in uvicorn's
access log. The redaction is applied where log records are made (a record factory), so it covers
uvicorn's access and error logs, our own loggers and any library's, whatever handlers are set up
later (`lockerctl serve`'s basicConfig, uvicorn's dictConfig, a deployment's own).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

REDACTED = "<redacted>"
# A path segment after /p/ (the page, the API and the QR image share the shape).
_PICKUP_PATH = re.compile(r"(/p/)[^/?#\s\"']+")

_installed = False


def redact(text: str) -> str:
    """`text` with every `/p/<token>` replaced by `/p/<redacted>`."""
    return _PICKUP_PATH.sub(rf"\g<1>{REDACTED}", text) if "/p/" in text else text


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, int | float | bytes):
        return value  # numbers keep their type for %d and %f
    text = str(value)  # a URL object (httpx logs its requests with one), an exception, ...
    return redact(text) if "/p/" in text else value


def install() -> None:
    """Redact every log record made in this process from now on (idempotent)."""
    global _installed
    if _installed:
        return
    make: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        # Message and arguments each: uvicorn's access formatter reads its five args by place.
        record.msg = _redacted(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redacted(v) for k, v in record.args.items()}
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
