"""`lockerctl up`: the whole locker system on one machine, under one supervisor.

What runs, in start order: the embedded MQTT broker (unless `--broker-url` names one), the demo
purchaser's inbox (a `json://` webhook that prints the messages), one board simulator per demo
kiosk (board and scanner on `socket://` ports, control API on `--sim-port` + i), the service
(SQLite in the data directory unless `--database-url` names another database), and one bridge
per kiosk. Before any of them the schema is migrated and, on the first run only, the demo site,
kiosks, merchant, courier and operator are created; their credentials are kept in
`<data dir>/demo.json` so a second run prints the same ones and finds its orders again.

The embedded broker takes no anonymous client. On the first run `up` makes a random MQTT password
for the service and for each kiosk; the plain ones stay in `<data dir>/mqtt-accounts.json`, read
only by `up` itself, which hands each child its own in its environment (never on a command line,
which any local user can read in the process list); the broker gets only their hashes, in
`<data dir>/broker.passwd`. Both files are created 0600.

One `up` per data directory: it holds `<data dir>/lockerctl-up.lock` (flock) while it runs, and
a second one refuses to start, naming the first one's pid. Each simulated bank keeps its
physical state (food, doors, latches, heat) in `<data dir>/sim-<kiosk>.json`, so a restart
resumes the story with the food where it was and a board that simply rebooted (ADR 0065).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit, urlunsplit

from locker_service.config import DEFAULT_CONTACT_SCHEMES
from locker_service.stack.broker_auth import (
    SERVICE_ACCOUNT,
    hash_password,
    parse_password_file,
    password_file_text,
    verify_password,
)
from locker_service.stack.demo import (
    DEMO_FILE,
    RUN_FILE,
    DemoCredentials,
    DemoDataError,
    ensure_demo_data,
    kiosk_code,
    write_private,
)
from locker_service.stack.ports import free_ports
from locker_service.stack.supervisor import ChildSpec, Supervisor

DEFAULT_DATA_DIR = Path("var")
SECRET_KEY_FILE = "secret_key"
BROKER_ACCOUNTS_FILE = "mqtt-accounts.json"  # plain MQTT passwords, read by `up` only
BROKER_PASSWORD_FILE = "broker.passwd"  # their hashes, read by the embedded broker
LOCK_FILE = "lockerctl-up.lock"  # held by the one `up` running on this data directory
# The embedded broker speaks MQTT 3.1.1 only (see broker.py).
EMBEDDED_MQTT_PROTOCOL = "3.1.1"
# The demo purchaser's inbox is a json:// webhook on this machine, which a service refuses
# unless told: allowed by name here (a value in the environment wins).
DEMO_CONTACT_ENV = {
    "LOCKER_NOTIFY_CONTACT_SCHEMES": ",".join([*DEFAULT_CONTACT_SCHEMES, "json"]),
    "LOCKER_NOTIFY_CONTACT_ALLOWED_NETWORKS": "127.0.0.1/32",
}
SERVICE_READY_TIMEOUT_S = 120.0  # first start migrates; two busy cores make that slow


@dataclass
class UpOptions:
    data_dir: Path = DEFAULT_DATA_DIR
    host: str = "127.0.0.1"
    port: int = 8000  # the service: dashboard, kiosk screen, API
    sim_port: int = 8001  # the first kiosk's simulator control API; kiosk i uses sim_port + i
    inbox_port: int = 8025  # the demo purchaser's inbox (json:// webhook); 0 picks a free port
    broker_port: int = 0  # the embedded broker; 0 picks a free port (1883 may be Mosquitto's)
    broker_url: str | None = None  # use this broker instead of the embedded one
    database_url: str | None = None  # default: SQLite in data_dir
    kiosks: int = 1
    compartments: int = 12
    time_scale: float = 1.0
    extra_env: dict[str, str] = field(default_factory=dict)  # handed to every child


def without_password(url: str) -> str:
    """`mqtt://user:secret@host` -> `mqtt://user:***@host`, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def lockerctl(*args: str) -> list[str]:
    """A `lockerctl` command line on this interpreter."""
    return [sys.executable, "-m", "locker_service", *args]


def secret_key(data_dir: Path) -> str:
    """The service's secret for this data directory, made once: pickup codes and courier PINs
    hashed on one run must still check on the next."""
    path = data_dir / SECRET_KEY_FILE
    if path.exists():
        return path.read_text().strip()
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


@dataclass
class BrokerAccounts:
    """The embedded broker's accounts: the service's password and one per kiosk id."""

    service_password: str
    kiosk_passwords: dict[str, str]

    def hashes(self, known: dict[str, str]) -> dict[str, str]:
        """{user: hash} for every account, keeping a `known` hash that still matches (so an
        unchanged password file is not rewritten with fresh salts)."""
        plain = {SERVICE_ACCOUNT: self.service_password, **self.kiosk_passwords}
        return {
            user: known[user]
            if user in known and verify_password(secret, known[user])
            else hash_password(secret)
            for user, secret in plain.items()
        }


def broker_accounts(data_dir: Path, kiosk_codes: list[str]) -> BrokerAccounts:
    """The accounts of this data directory, made once and kept: a bridge's and the service's
    persistent sessions outlive a restart of `up` only under the same account. A kiosk that a
    later run adds gets a password of its own; the password file is rewritten to match."""
    path = data_dir / BROKER_ACCOUNTS_FILE
    try:
        data = json.loads(path.read_text())
        accounts = BrokerAccounts(data["service_password"], dict(data["kiosk_passwords"]))
    except FileNotFoundError:
        accounts = BrokerAccounts(secrets.token_urlsafe(32), {})
    except (ValueError, KeyError, TypeError) as exc:
        raise DemoDataError(f"{path} is not an MQTT accounts file ({exc}): remove it") from exc
    missing = [code for code in kiosk_codes if code not in accounts.kiosk_passwords]
    for code in missing:
        accounts.kiosk_passwords[code] = secrets.token_urlsafe(32)
    if missing or not path.exists():
        write_private(path, json.dumps(asdict(accounts), indent=2) + "\n")
    passwd = data_dir / BROKER_PASSWORD_FILE
    known = parse_password_file(passwd.read_text()) if passwd.exists() else {}
    hashes = accounts.hashes(known)
    if hashes != known:
        write_private(passwd, password_file_text(hashes))
    return accounts


class DataDirInUse(RuntimeError):
    """Another `lockerctl up` holds the data directory."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        holder = f"process {pid}" if pid else "another process"
        stop = f"Ctrl-C in its terminal or `kill -INT {pid}`" if pid else "Ctrl-C in its terminal"
        super().__init__(
            f"{data_dir} is in use by another `lockerctl up` ({holder}): stop it first "
            f"({stop}), or give this one another --data-dir"
        )
        self.pid = pid


def hold_data_dir(data_dir: Path) -> int:
    """Take the data directory for this process; the open lock file's descriptor is returned
    and must stay open for as long as the run lasts.

    `flock` rather than a pid file alone: the kernel drops the lock when its holder dies, even
    by SIGKILL, so a crashed run never locks the next one out. The pid in the file only names
    the holder in the message. The descriptor is not inherited by the children (O_CLOEXEC).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise DataDirInUse(data_dir, int(text) if text.isdigit() else None) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


@dataclass
class Plan:
    """Everything `up` decided before starting: addresses, environment, children."""

    options: UpOptions
    database_url: str
    broker_url: str
    embedded_broker: bool
    service_env: dict[str, str]
    children: list[ChildSpec]
    kiosk_codes: list[str]
    inbox_url: str
    screen_ports: list[int]

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.options.host in ("0.0.0.0", "::") else self.options.host
        return f"http://{host}:{self.options.port}"

    def sim_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.options.sim_port + index}"

    def kiosk_screen_url(self, index: int, token: str) -> str:
        """The kiosk's screen, handing over to its bridge's own screen while cut off."""
        offline = f"http://127.0.0.1:{self.screen_ports[index]}"
        return f"{self.base_url}/kiosk?offline_screen={offline}#token={token}"


def plan(options: UpOptions) -> Plan:
    data_dir = options.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    scale = f"{options.time_scale:g}"
    database_url = options.database_url or f"sqlite+aiosqlite:///{data_dir / 'locker.db'}"
    embedded = options.broker_url is None
    children: list[ChildSpec] = []
    # Every port picked for this run at once, so no two of them are the same.
    fixed = {options.port, *(options.sim_port + i for i in range(options.kiosks))}
    picked = iter(free_ports(2 + 3 * options.kiosks, taken=fixed))
    codes = [kiosk_code(i) for i in range(options.kiosks)]
    accounts: BrokerAccounts | None = None
    if embedded:
        accounts = broker_accounts(data_dir, codes)
        broker_port = options.broker_port or next(picked)
        broker_url = f"mqtt://127.0.0.1:{broker_port}"
        children.append(
            ChildSpec(
                "broker",
                [
                    sys.executable,
                    "-m",
                    "locker_service.stack.broker",
                    "--port",
                    str(broker_port),
                    "--password-file",
                    str(data_dir / BROKER_PASSWORD_FILE),
                ],
                ready_port=("127.0.0.1", broker_port),
            )
        )
    else:
        assert options.broker_url is not None
        broker_url = options.broker_url

    inbox_port = options.inbox_port or next(picked)
    children.append(
        ChildSpec(
            "inbox",
            [
                sys.executable,
                "-m",
                "locker_service.stack.inbox",
                "--port",
                str(inbox_port),
                "--dir",
                str(data_dir / "inbox"),
            ],
            ready_port=("127.0.0.1", inbox_port),
        )
    )

    common = {"LOCKER_TIME_SCALE": scale, **options.extra_env}
    sockets: list[tuple[int, int]] = []
    screen_ports = [next(picked) for _ in codes]  # each bridge's offline screen (ADR 0077)
    for i, code in enumerate(codes):
        board_port, scanner_port = next(picked), next(picked)
        sockets.append((board_port, scanner_port))
        http_port = options.sim_port + i
        children.append(
            ChildSpec(
                f"sim-{code}" if options.kiosks > 1 else "sim",
                lockerctl(
                    "sim",
                    "--compartments",
                    str(options.compartments),
                    "--name",
                    code,
                    "--seed",
                    str(i + 1),
                    "--no-pty",
                    "--board-port",
                    str(board_port),
                    "--scanner-port",
                    str(scanner_port),
                    "--socket-host",
                    "127.0.0.1",
                    "--http-host",
                    "127.0.0.1",
                    "--http-port",
                    str(http_port),
                    "--time-scale",
                    scale,
                    "--state-file",
                    str(data_dir / f"sim-{code}.json"),
                ),
                env=common,
                ready_port=("127.0.0.1", http_port),
            )
        )

    service_env = {
        **{k: v for k, v in DEMO_CONTACT_ENV.items() if k not in os.environ},
        **common,
        "LOCKER_DATABASE_URL": database_url,
        "LOCKER_SECRET_KEY": secret_key(data_dir),
        "LOCKER_HOST": options.host,
        "LOCKER_PORT": str(options.port),
        "LOCKER_PUBLIC_BASE_URL": f"http://127.0.0.1:{options.port}",
        "LOCKER_MQTT_URL": broker_url,
    }
    if accounts is not None:
        service_env["LOCKER_MQTT_PROTOCOL"] = EMBEDDED_MQTT_PROTOCOL
        service_env["LOCKER_MQTT_USERNAME"] = SERVICE_ACCOUNT
        service_env["LOCKER_MQTT_PASSWORD"] = accounts.service_password
    ready_host = "127.0.0.1" if options.host in ("0.0.0.0", "::") else options.host
    children.append(
        ChildSpec(
            "service",
            # The screens poll: a line per request would scroll the banner and the inbox away,
            # unless LOCKER_ACCESS_LOG asks for it.
            lockerctl("serve", *([] if "LOCKER_ACCESS_LOG" in os.environ else ["--no-access-log"])),
            env=service_env,
            ready_port=(ready_host, options.port),
            ready_path="/readyz",  # its kiosks taken, not only its port open (ADR 0099)
            ready_timeout_s=SERVICE_READY_TIMEOUT_S,
        )
    )
    for i, code in enumerate(codes):
        board_port, scanner_port = sockets[i]
        bridge_args = [
            "bridge",
            "--kiosk-id",
            code,
            "--broker-url",
            broker_url,
            "--board-url",
            f"socket://127.0.0.1:{board_port}",
            "--scanner-url",
            f"socket://127.0.0.1:{scanner_port}",
            "--data-dir",
            str(data_dir / f"bridge-{code}"),
            "--time-scale",
            scale,
            "--screen-port",
            str(screen_ports[i]),
        ]
        bridge_env = dict(common)
        # The offline screen hands back to this service's kiosk screen only.
        service_host = "127.0.0.1" if options.host in ("0.0.0.0", "::") else options.host
        bridge_env["BRIDGE_SCREEN_SERVICE_URL"] = f"http://{service_host}:{options.port}"
        if accounts is not None:
            bridge_args += ["--mqtt-version", EMBEDDED_MQTT_PROTOCOL]
            # The kiosk's account: its user name is its kiosk id, as on the production broker.
            bridge_env["BRIDGE_USERNAME"] = code
            bridge_env["BRIDGE_PASSWORD"] = accounts.kiosk_passwords[code]
        children.append(
            ChildSpec(
                f"bridge-{code}" if options.kiosks > 1 else "bridge",
                lockerctl(*bridge_args),
                env=bridge_env,
            )
        )
    return Plan(
        options,
        database_url,
        broker_url,
        embedded,
        service_env,
        children,
        codes,
        f"json://127.0.0.1:{inbox_port}/",
        screen_ports,
    )


def banner(p: Plan, creds: DemoCredentials) -> str:
    """What a newcomer needs to play the story, printed once everything is up."""
    o = p.options
    kiosks = creds.kiosks[: o.kiosks]
    lines = [
        "",
        "The smart food locker is running.",
        "",
        f"  Operator dashboard   {p.base_url}/dashboard",
        f"    operator token     {creds.operator_token}",
    ]
    for i, k in enumerate(kiosks):
        lines += [
            f"  Kiosk screen         {p.kiosk_screen_url(i, k.token)}"
            + (f"   ({k.code})" if len(kiosks) > 1 else ""),
            f"    kiosk token        {k.token}   (Authorization: Bearer, /api/v1/kiosk/...)",
        ]
    lines += [
        f"  Simulator panel      {p.base_url}/demo?sim={p.sim_url(i)}"
        + (f"   ({k.code})" if len(kiosks) > 1 else "")
        for i, k in enumerate(kiosks)
    ]
    lines += [
        f"  API docs             {p.base_url}/docs",
        f"    merchant API key   {creds.merchant_api_key}   (X-API-Key)",
        f'    site code          {creds.site_code}   ("site" of POST /api/v1/orders)',
        f"  Courier              code {creds.courier_code}, PIN {creds.courier_pin}",
        f"  Purchaser inbox      messages appear below as 'inbox | ...' ({p.inbox_url})",
        "",
        f"  Data                 {o.data_dir.resolve()} (credentials in {DEMO_FILE})",
        f"  MQTT broker          {without_password(p.broker_url)}"
        + (
            f" (embedded; accounts in {BROKER_ACCOUNTS_FILE}, no anonymous access)"
            if p.embedded_broker
            else ""
        ),
        f"  Time scale           {o.time_scale:g}x",
        "",
        "  Place an order:      lockerctl demo-order"
        + (f" --data-dir {o.data_dir}" if o.data_dir != DEFAULT_DATA_DIR else ""),
        "  Stop:                Ctrl-C",
        "",
    ]
    return "\n".join(lines)


def ports_in_use(p: Plan) -> list[str]:
    """A message per port of the plan that something else already listens on."""
    wanted = {
        "--port (the service)": (p.options.host, p.options.port),
        "--inbox-port": ("127.0.0.1", p.options.inbox_port),
    }
    for i in range(p.options.kiosks):
        wanted[f"--sim-port (simulator {i + 1})"] = ("127.0.0.1", p.options.sim_port + i)
    if p.embedded_broker and p.options.broker_port:
        wanted["--broker-port"] = ("127.0.0.1", p.options.broker_port)
    taken = []
    for option, (host, port) in wanted.items():
        if port == 0:
            continue
        with socket.socket() as s:
            # As the servers themselves do: a port left in TIME_WAIT by the last run is free.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as exc:
                taken.append(f"port {port} is not free for {option}: {exc.strerror}")
    return taken


def write_run_file(p: Plan) -> None:
    """Addresses of this run, so `lockerctl demo-order` finds the service and the inbox."""
    run = {
        "service_url": p.base_url,
        "inbox_url": p.inbox_url,
        "broker_url": without_password(p.broker_url),
        "simulators": {code: p.sim_url(i) for i, code in enumerate(p.kiosk_codes)},
    }
    (p.options.data_dir / RUN_FILE).write_text(json.dumps(run, indent=2) + "\n")


async def run_up(
    options: UpOptions,
    out: TextIO | None = None,
    on_ready: Callable[[Plan, DemoCredentials], None] | None = None,
) -> int:
    """Migrate, seed on first run, start and supervise everything until Ctrl-C or SIGTERM."""
    out = out or sys.stdout
    # Before anything is written or started: a second run on the same data would share the
    # database, the bridges' queues and the simulated banks' state with the first.
    try:
        lock_fd = hold_data_dir(options.data_dir.resolve())
    except DataDirInUse as exc:
        out.write(f"lockerctl up: {exc}\n")
        out.write("lockerctl up: nothing was started\n")
        out.flush()
        return 2  # as for a port that is taken: refused, nothing started
    try:
        return await _run_up_holding(options, out, on_ready)
    finally:
        os.close(lock_fd)


async def _run_up_holding(
    options: UpOptions,
    out: TextIO,
    on_ready: Callable[[Plan, DemoCredentials], None] | None,
) -> int:
    from migrations import upgrade_async

    p = plan(options)
    supervisor = Supervisor(p.children, out=out)
    taken = ports_in_use(p)
    if taken:
        for message in taken:
            supervisor.say(message)
        supervisor.say("nothing was started (is another `lockerctl up` running?)")
        return 2
    supervisor.say(f"data directory {options.data_dir.resolve()}")
    supervisor.say("migrating the database")
    try:
        await upgrade_async(p.database_url, secret_key=p.service_env["LOCKER_SECRET_KEY"])
    except Exception as exc:  # any driver or migration error: say it, start nothing
        supervisor.say(f"the database could not be migrated ({type(exc).__name__}: {exc})")
        supervisor.say("nothing was started")
        return 1
    creds = await ensure_demo_data(
        options.data_dir.resolve(),
        p.database_url,
        p.service_env["LOCKER_SECRET_KEY"],
        kiosks=options.kiosks,
        compartments=options.compartments,
    )
    supervisor.say(
        "demo data created" if creds.created_now else "demo data found from an earlier run"
    )

    async def ready() -> None:
        write_run_file(p)
        out.write(banner(p, creds) + "\n")
        out.flush()
        if on_ready is not None:
            on_ready(p, creds)

    return await supervisor.run(ready)
