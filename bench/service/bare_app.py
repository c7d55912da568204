"""The baseline of the orders benchmark: a bare FastAPI endpoint answering what
`POST /api/v1/orders` answers, with no authentication, validation beyond the body model, or
database. Run by uvicorn exactly like the service, so the difference is the service's own work.
"""

from __future__ import annotations

import json
import os
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel

# The benchmark captures one real answer of the service and hands it over through the
# environment, so both endpoints send the same bytes.
ANSWER: dict[str, Any] = json.loads(os.environ.get("BENCH_ORDER_ANSWER", "{}"))


class OrderBody(BaseModel):
    external_ref: str
    site: str
    purchaser_name: str
    purchaser_contact: str
    size: str = "M"
    temperature_class: str = "hot"


app = FastAPI()


@app.post("/api/v1/orders", status_code=201)
async def create_order(body: OrderBody) -> JSONResponse:
    return JSONResponse({**ANSWER, "external_ref": body.external_ref}, status_code=201)
