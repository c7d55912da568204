"""HTTP control of the simulated world: the demo panel and tests act through it.

Its own FastAPI app with an OpenAPI page at /docs. It changes only the physical world and the
faults, never the board's firmware state: everything the board does still has to be asked for
over the serial line. Errors are JSON `{"error": code, "message": text}`.
"""

from __future__ import annotations

from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field

from hardware.physics import (
    MAX_ITEM_MASS_G,
    MIN_ITEM_MASS_G,
    NoSuchCompartment,
    WorldError,
)
from hardware.simulator import CompartmentTruth, SimTruth, Simulator, TemperaturePoint


class DoorOpen(BaseModel):
    force: bool = Field(False, description="Open it even though the lock is latched (forced door)")


class Item(BaseModel):
    mass_g: float = Field(450.0, ge=MIN_ITEM_MASS_G, le=MAX_ITEM_MASS_G)
    temp_c: float = Field(70.0, ge=-30, le=100)


class Scan(BaseModel):
    text: str = Field(min_length=1, max_length=512, examples=["LKR1:3q9Z...", "12345678"])


class Lobby(BaseModel):
    temp_c: float = Field(ge=-30, le=60)


class CompartmentFaults(BaseModel):
    """Only the fields given are changed."""

    sensor: Literal["open", "short"] | None = None
    dead_heater: bool | None = None
    stuck_heater: bool | None = None
    jammed_lock: bool | None = None
    dead_lamp: bool | None = None


class LineFaults(BaseModel):
    error_rate: float = Field(ge=0, le=1, description="Probability that a byte is corrupted")
    direction: Literal["both", "to_board", "from_board"] = "both"


class CablePull(BaseModel):
    device: Literal["board", "scanner"] = "board"
    seconds: float = Field(gt=0, le=86400, description="Simulated seconds until it is back")


class Done(BaseModel):
    ok: bool = True


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def create_app(sim: Simulator, cors_origins: list[str] | None = None) -> FastAPI:
    # Its reference at /docs and /redoc comes from the package, not a CDN (a test bench may
    # have no internet).
    app = FastAPIOffline(
        title="Locker bank simulator",
        version="1.0.0",
        description="Physical world and fault injection of a simulated locker bank board.",
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=cors_origins if cors_origins is not None else ["*"],
        allow_methods=["*"],
        allow_headers=["*"],
    )

    @app.exception_handler(NoSuchCompartment)
    async def no_compartment(_: Request, exc: NoSuchCompartment) -> JSONResponse:
        return _error(404, "no_such_compartment", str(exc))

    @app.exception_handler(WorldError)
    async def impossible(_: Request, exc: WorldError) -> JSONResponse:
        return _error(409, "physically_impossible", str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, "invalid_request", f"{where}: {first.get('msg')}")

    @app.get("/healthz", response_model=Done, tags=["simulator"])
    def healthz() -> Done:
        return Done()

    @app.get("/truth", response_model=SimTruth, tags=["simulator"])
    def truth() -> SimTruth:
        """The whole physical truth: every compartment, the board, the line, the ports."""
        return sim.truth()

    @app.get("/compartments/{n}", response_model=CompartmentTruth, tags=["world"])
    def compartment(n: int) -> CompartmentTruth:
        sim.model.compartment(n)  # 404 for a number outside the bank
        return sim.truth().compartments[n - 1]

    @app.get(
        "/compartments/{n}/temperatures", response_model=list[TemperaturePoint], tags=["world"]
    )
    def temperatures(n: int, since: float = 0.0) -> list[TemperaturePoint]:
        """The simulator's own record of the probe (a point per 10 simulated seconds, the
        last 12 simulated hours), to hold the service's record of the food against."""
        return sim.temperatures(n, since)

    @app.post("/compartments/{n}/door/open", response_model=CompartmentTruth, tags=["world"])
    def open_door(n: int, body: DoorOpen | None = None) -> CompartmentTruth:
        sim.world.open_door(n, force=body.force if body else False)
        return sim.truth().compartments[n - 1]

    @app.post("/compartments/{n}/door/close", response_model=CompartmentTruth, tags=["world"])
    def close_door(n: int) -> CompartmentTruth:
        sim.world.close_door(n)
        return sim.truth().compartments[n - 1]

    @app.post("/compartments/{n}/item", response_model=CompartmentTruth, tags=["world"])
    def place_item(n: int, body: Item) -> CompartmentTruth:
        sim.world.place_item(n, body.mass_g, body.temp_c)
        return sim.truth().compartments[n - 1]

    @app.delete("/compartments/{n}/item", response_model=CompartmentTruth, tags=["world"])
    def remove_item(n: int) -> CompartmentTruth:
        sim.world.remove_item(n)
        return sim.truth().compartments[n - 1]

    @app.post("/scanner/scan", response_model=Done, tags=["world"])
    def scan(body: Scan) -> Done:
        sim.world.scan(body.text)
        return Done()

    @app.put("/lobby", response_model=Done, tags=["world"])
    def lobby(body: Lobby) -> Done:
        sim.world.set_lobby_temp(body.temp_c)
        return Done()

    @app.put("/faults/compartments/{n}", response_model=CompartmentTruth, tags=["faults"])
    def compartment_faults(n: int, body: CompartmentFaults) -> CompartmentTruth:
        sim.model.compartment(n)
        given = body.model_fields_set
        if "sensor" in given:
            sim.faults.sensor(n, body.sensor)
        if body.dead_heater is not None:
            sim.faults.dead_heater(n, body.dead_heater)
        if body.stuck_heater is not None:
            sim.faults.stuck_heater(n, body.stuck_heater)
        if body.jammed_lock is not None:
            sim.faults.jam_lock(n, body.jammed_lock)
        if body.dead_lamp is not None:
            sim.faults.dead_lamp(n, body.dead_lamp)
        return sim.truth().compartments[n - 1]

    @app.put("/faults/line", response_model=Done, tags=["faults"])
    def line(body: LineFaults) -> Done:
        sim.faults.line_errors(body.error_rate, body.direction)
        return Done()

    @app.post("/faults/reboot", response_model=Done, tags=["faults"])
    def reboot() -> Done:
        sim.faults.reboot()
        return Done()

    @app.post("/faults/cable", response_model=Done, tags=["faults"])
    def cable(body: CablePull) -> Done:
        sim.faults.pull_cable(body.seconds, body.device)
        return Done()

    return app
