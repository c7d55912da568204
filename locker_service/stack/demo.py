"""Demo data for `lockerctl up`: one site, its kiosks with their compartments, a merchant, a
courier and an operator, made on the first run; and the `lockerctl demo-order` command.

Only hashes of credentials go into the database, so the plain values are kept beside it in
`<data dir>/demo.json` (mode 0600): a second run prints the same ones. That file is a demo
convenience, never a production mechanism (production creates credentials with the admin
commands, which print them once).
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import make_url

DEMO_FILE = "demo.json"
RUN_FILE = "run.json"  # addresses of the latest `lockerctl up` run, for `lockerctl demo-order`
DEMO_SITE_CODE = "demo"
DEMO_COURIER_CODE = "courier-1"


def kiosk_code(index: int) -> str:
    """MQTT kiosk id of the index-th demo kiosk (0-based)."""
    return f"demo-{index + 1}"


def compartment_sizes(count: int) -> list[str]:
    """A bank's layout: a quarter small, half medium, a quarter large (doors top to bottom)."""
    small = count // 4
    large = count // 4
    return ["S"] * small + ["M"] * (count - small - large) + ["L"] * large


def layout_string(sizes: list[str]) -> str:
    """`["S", "M", "M"]` -> `"S:1,M:2"`, the layout `lockerctl create-kiosk` takes."""
    return ",".join(f"{size}:{sizes.count(size)}" for size in "SML" if size in sizes)


@dataclass
class KioskCredentials:
    code: str
    token: str


@dataclass
class DemoCredentials:
    database: str  # the database these belong to (password removed)
    site_code: str
    kiosks: list[KioskCredentials]
    merchant_api_key: str
    courier_code: str
    courier_pin: str
    operator_token: str
    created_now: bool = field(default=False, compare=False)

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("created_now")
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> DemoCredentials:
        data: dict[str, Any] = json.loads(text)
        data["kiosks"] = [KioskCredentials(**k) for k in data["kiosks"]]
        return cls(**data)


class DemoDataError(RuntimeError):
    """Demo data that cannot be made or found consistently."""


def database_label(database_url: str) -> str:
    return make_url(database_url).render_as_string(hide_password=True)


def load_credentials(data_dir: Path) -> DemoCredentials | None:
    path = data_dir / DEMO_FILE
    if not path.exists():
        return None
    try:
        return DemoCredentials.from_json(path.read_text())
    except (ValueError, TypeError, KeyError) as exc:
        raise DemoDataError(f"{path} is not a demo credentials file: {exc}") from exc


def load_run_addresses(data_dir: Path) -> dict[str, Any]:
    """What the latest `lockerctl up` in this data directory wrote to run.json; {} if nothing."""
    try:
        data = json.loads((data_dir / RUN_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by this user only (created 0600, never wider), atomically."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _credentials_for(data_dir: Path, label: str) -> DemoCredentials | None:
    data_dir.mkdir(parents=True, exist_ok=True)
    creds = load_credentials(data_dir)
    if creds is not None and creds.database != label:
        raise DemoDataError(
            f"{data_dir / DEMO_FILE} belongs to {creds.database}, not {label}: "
            "use another --data-dir for another database"
        )
    return creds


async def ensure_demo_data(
    data_dir: Path,
    database_url: str,
    secret_key: str,
    *,
    kiosks: int = 1,
    compartments: int = 12,
) -> DemoCredentials:
    """Create the demo data unless this data directory already made it in this database; add
    kiosks when a later run asks for more than before."""
    from locker_service.db import create_engine, create_sessionmaker
    from locker_service.models import Kiosk, Site
    from locker_service.sites import service as admin

    label = database_label(database_url)
    creds = _credentials_for(data_dir, label)
    engine = create_engine(database_url)
    try:
        sessionmaker = create_sessionmaker(engine)
        async with sessionmaker() as session, session.begin():
            site = await session.scalar(select(Site).where(Site.code == DEMO_SITE_CODE))
            if creds is None and site is not None:
                raise DemoDataError(
                    f"{label} already has a '{DEMO_SITE_CODE}' site but {data_dir / DEMO_FILE} "
                    "is missing, so its credentials are unknown: start from an empty database"
                )
            if creds is not None and site is None:
                raise DemoDataError(
                    f"{data_dir / DEMO_FILE} exists but {label} has no '{DEMO_SITE_CODE}' site: "
                    "the database was replaced; remove the demo file to start afresh"
                )
            created_now = creds is None
            if creds is None:
                await admin.create_site(session, DEMO_SITE_CODE, "Demo office tower")
                merchant = await admin.create_merchant(session, "Demo Kitchen", [DEMO_SITE_CODE])
                courier = await admin.create_courier(
                    session,
                    secret_key,
                    DEMO_COURIER_CODE,
                    "Demo Courier",
                    company="Demo Deliveries",
                )
                operator = await admin.create_operator(
                    session, "Demo Operator", "admin", [DEMO_SITE_CODE]
                )
                assert merchant.secret and courier.secret and operator.secret
                creds = DemoCredentials(
                    database=label,
                    site_code=DEMO_SITE_CODE,
                    kiosks=[],
                    merchant_api_key=merchant.secret,
                    courier_code=DEMO_COURIER_CODE,
                    courier_pin=courier.secret,
                    operator_token=operator.secret,
                )
            for index in range(len(creds.kiosks), kiosks):
                code = kiosk_code(index)
                if await session.scalar(select(Kiosk.id).where(Kiosk.code == code)) is not None:
                    raise DemoDataError(f"kiosk {code} exists but is not in {DEMO_FILE}")
                made = await admin.create_kiosk(
                    session,
                    DEMO_SITE_CODE,
                    code,
                    f"Demo kiosk {index + 1}",
                    layout_string(compartment_sizes(compartments)),
                )
                assert made.secret is not None
                creds.kiosks.append(KioskCredentials(code=code, token=made.secret))
            # Written inside the transaction: if the file cannot be written, nothing is kept
            # whose credentials would be lost.
            write_private(data_dir / DEMO_FILE, creds.to_json())
    finally:
        await engine.dispose()
    creds.created_now = created_now
    return creds


def demo_order_body(
    size: str = "M", purchaser_contact: str | None = None, name: str = "Ada Purchaser"
) -> dict[str, Any]:
    """A merchant's order for the demo site, with a fresh external reference."""
    return {
        "external_ref": f"demo-{uuid.uuid4().hex[:10]}",
        "site": DEMO_SITE_CODE,
        "purchaser_name": name,
        "purchaser_contact": purchaser_contact,
        "size": size,
        "temperature_class": "hot",
    }


class DemoOrderError(RuntimeError):
    """The service refused or could not be reached; the message says which and why."""


def place_demo_order(
    base_url: str,
    creds: DemoCredentials,
    *,
    size: str = "M",
    purchaser_contact: str | None = None,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """POST the order as the demo merchant; returns the service's answer."""
    import httpx

    body = demo_order_body(size, purchaser_contact)
    try:
        response = httpx.post(
            f"{base_url.rstrip('/')}/api/v1/orders",
            json=body,
            headers={"X-API-Key": creds.merchant_api_key},
            timeout=timeout_s,
        )
    except httpx.HTTPError as exc:
        raise DemoOrderError(
            f"cannot reach the service at {base_url} ({exc}); is `lockerctl up` running?"
        ) from exc
    if response.status_code >= 400:
        try:
            err = response.json()
            detail = f"{err.get('error')}: {err.get('message')}"
        except ValueError:
            detail = response.text[:200]
        raise DemoOrderError(f"the service refused the order ({response.status_code} {detail})")
    answer: dict[str, Any] = response.json()
    answer.setdefault("external_ref", body["external_ref"])
    return answer


def describe_demo_order(base_url: str, order: dict[str, Any], creds: DemoCredentials) -> str:
    """What to do next, in the story's order."""
    purchaser = order.get("purchaser_url") or ""
    if purchaser.startswith("/"):
        purchaser = base_url.rstrip("/") + purchaser
    ref = order.get("external_ref", "")
    return "\n".join(
        [
            f"Order {order.get('id')} placed ({order.get('state', 'created')}), reference {ref}.",
            "",
            "1. Courier drop-off at the kiosk screen (also inside the simulator panel):",
            f"   {base_url.rstrip('/')}/kiosk#token={creds.kiosks[0].token}",
            f"   courier {creds.courier_code}, PIN {creds.courier_pin}, order reference {ref}",
            "2. In the simulator panel: open the compartment's door, place the food, close it.",
            "3. After the disinfection cycle the purchaser's page shows the QR code and code:",
            f"   {purchaser}",
            "4. Scan it in the simulator panel (or type the code at the kiosk screen), take the",
            "   food out and close the door.",
        ]
    )
