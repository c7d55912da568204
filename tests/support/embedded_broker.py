"""The embedded broker of `lockerctl up`, started as `up` starts it: the command line and the
accounts come from `plan()` for a data directory, so tests meet the same broker a newcomer does."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from locker_service.stack.broker_auth import BRIDGE_CLIENT_ID_PREFIX, SERVICE_ACCOUNT
from locker_service.stack.up import BrokerAccounts, UpOptions, broker_accounts, plan
from tests.support.mosquitto import wait_for_port


@dataclass
class Account:
    username: str
    password: str
    client_id: str  # the one this account may use (the service: any locker-service-<replica>)


class EmbeddedBrokerProcess:
    """`python -m locker_service.stack.broker ...` as planned by `lockerctl up` for `data_dir`."""

    def __init__(self, data_dir: Path, kiosks: int = 2) -> None:
        self.data_dir = data_dir
        self.plan = plan(UpOptions(data_dir=data_dir, kiosks=kiosks))
        (self.spec,) = [c for c in self.plan.children if c.name == "broker"]
        self.host, port = self.plan.broker_url.removeprefix("mqtt://").rsplit(":", 1)
        self.port = int(port)
        self.kiosk_codes = self.plan.kiosk_codes
        self.accounts: BrokerAccounts = broker_accounts(data_dir.resolve(), self.kiosk_codes)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.plan.broker_url

    def service(self, replica: str = "r1") -> Account:
        return Account(SERVICE_ACCOUNT, self.accounts.service_password, f"locker-service-{replica}")

    def kiosk(self, code: str) -> Account:
        return Account(code, self.accounts.kiosk_passwords[code], BRIDGE_CLIENT_ID_PREFIX + code)

    def start(self) -> EmbeddedBrokerProcess:
        self.proc = subprocess.Popen(
            self.spec.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        wait_for_port(self.host, self.port, timeout_s=30)
        return self

    def stop(self) -> str:
        """SIGTERM, wait, and return what it printed; a clean stop exits 0."""
        assert self.proc is not None
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=15)
        text = out.decode(errors="replace")
        assert self.proc.returncode == 0, text
        self.proc = None
        return text

    def __enter__(self) -> EmbeddedBrokerProcess:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is not None:
            self.stop()
