"""The profile "emqx" of docker-compose.yml: a three-node EMQX cluster (docs/deploy/emqx/) with
the accounts and ACL of the Mosquitto setup. It cannot be started here (no container runtime):
what is checked is the compose file with and without the profile, the account files its one-shot
job writes from .env (by running the same script), and emqx.conf and acl.conf read as files, held
to the Mosquitto setup's rules.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from paho.mqtt.client import topic_matches_sub

from firmware_bridge.contract.broker import BrokerEndpoint
from locker_service.config import Settings
from locker_service.stack.broker_auth import Access, filter_within, parse_acl
from tests.stack.test_compose import OPTIONAL, ROOT, SECRETS, compose
from tests.stack.test_compose import config as config  # the fixture: the default services

pytestmark = pytest.mark.slow  # docker-compose runs per test

DEFAULT_SERVICES = {
    "postgres",
    "mosquitto-passwords",
    "mosquitto",
    "migrate",
    "service",
    "simulator",
    "bridge",
}
EMQX_NODES = ("emqx1", "emqx2", "emqx3")
EMQX_DEPLOY = ROOT / "docs" / "deploy" / "emqx"


COOKIE = "c" + "0123456789abcdef" * 4
# Passwords a shell script could get wrong when it writes JSON: quotes, backslashes, '*', UTF-8.
EXTRA_KIOSKS = {"kiosk-2": 'two"quoted\\slash', "kiosk-3": "drei-*-€"}


def emqx_env_lines() -> dict[str, str]:
    """The EMQX lines of env.example, commented out there, as .env would have them."""
    found = dict(
        re.findall(
            r"^#([A-Z_]+)=(.*)$", (ROOT / "docs" / "deploy" / "env.example").read_text(), re.M
        )
    )
    assert set(found) == set(OPTIONAL), found
    return found


def emqx_env(**changes: str) -> dict[str, str]:
    extra = " ".join(f"{kiosk}:{password}" for kiosk, password in EXTRA_KIOSKS.items())
    env = {**SECRETS, **emqx_env_lines(), "EXTRA_KIOSK_CREDENTIALS": extra}
    env["EMQX_NODE_COOKIE"] = COOKIE  # empty in env.example: the operator's secret
    return {**env, **changes}


@pytest.fixture(scope="module")
def emqx_config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    result = compose(tmp_path_factory.mktemp("emqx"), "--profile", "emqx", "config", env=emqx_env())
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = yaml.safe_load(result.stdout)
    return loaded


def active(services: dict[str, Any], *profiles: str) -> set[str]:
    """The services compose starts with these profiles: those of no profile, and those of one
    given (Debian's docker-compose 1.29 prints every service in `config`, whatever the profile)."""
    return {
        name
        for name, service in services.items()
        if not service.get("profiles") or set(service["profiles"]) & set(profiles)
    }


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """target -> (source, mode), from the short syntax docker-compose 1.29 prints."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, mode = volume.split(":")
        found[target] = (source, mode)
    return found


def test_default_config_runs_no_emqx_service(config: dict[str, Any]) -> None:
    services = config["services"]
    assert active(services) == DEFAULT_SERVICES
    profiled = set(services) - DEFAULT_SERVICES
    assert profiled == {"emqx-accounts", *EMQX_NODES}
    for name in profiled:
        assert services[name]["profiles"] == ["emqx"], name
    # No default service needs a profiled one (compose would refuse to start without it).
    for name in DEFAULT_SERVICES:
        assert not set(services[name].get("depends_on", {})) & profiled, name
        assert "emqx" not in json.dumps(services[name]), name


def test_emqx_profile_config_is_valid(tmp_path: Path) -> None:
    explicit = compose(tmp_path, "--profile", "emqx", "config", "-q", env=emqx_env())
    assert explicit.returncode == 0, explicit.stderr
    # As env.example suggests: the profile from COMPOSE_PROFILES.
    assert emqx_env()["COMPOSE_PROFILES"] == "emqx"
    from_env = compose(tmp_path, "config", "-q", env=emqx_env())
    assert from_env.returncode == 0, from_env.stderr


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_emqx_profile_refuses_to_start_without_each_secret(tmp_path: Path, missing: str) -> None:
    env = {k: v for k, v in emqx_env().items() if k != missing}
    result = compose(tmp_path, "--profile", "emqx", "config", "-q", env=env)
    assert result.returncode != 0
    assert f"set {missing} in .env" in result.stderr


def run_make_accounts(
    emqx_config: dict[str, Any], out: Path, **env_changes: str | None
) -> subprocess.CompletedProcess[str]:
    """The emqx-accounts job, natively: its script, its arguments but the directory, and the
    environment compose hands it."""
    job = emqx_config["services"]["emqx-accounts"]
    shell, script_in_container, _ = job["entrypoint"]
    scripts = mounts(job)
    script = Path(scripts[script_in_container][0])
    assert script == EMQX_DEPLOY / "make-accounts.sh"
    # It runs Mosquitto's script from beside it: the container has it where the repository has.
    beside = str(Path(script_in_container).parent.parent / "mosquitto" / "make-passwords.sh")
    assert scripts[beside] == (
        str(ROOT / "docs" / "deploy" / "mosquitto" / "make-passwords.sh"),
        "ro",
    )
    env = {**job["environment"], **env_changes}
    return subprocess.run(
        [shell, str(script), str(out)],
        env={"PATH": os.environ["PATH"], **{k: v for k, v in env.items() if v is not None}},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    "cookie",
    [None, "", "c" * 31, "0" + "c" * 40, "-" + "c" * 40, "c" * 40 + "!", "c" * 40 + " c"],
)
def test_emqx_nodes_refuse_to_start_without_a_cookie(
    emqx_config: dict[str, Any], tmp_path: Path, cookie: str | None
) -> None:
    """Compose cannot require a variable for one profile alone: the nodes wait for the accounts
    job, which refuses to run without the cookie the nodes are given."""
    services = emqx_config["services"]
    job = services["emqx-accounts"]
    for node in EMQX_NODES:
        waits = services[node]["depends_on"]["emqx-accounts"]
        assert waits == {"condition": "service_completed_successfully"}, node
        assert services[node]["environment"]["EMQX_NODE__COOKIE"] == COOKIE, node
    assert job["environment"]["EMQX_NODE_COOKIE"] == COOKIE
    assert run_make_accounts(emqx_config, tmp_path).returncode == 0
    result = run_make_accounts(emqx_config, tmp_path / "again", EMQX_NODE_COOKIE=cookie)
    assert result.returncode != 0
    assert "EMQX_NODE_COOKIE" in result.stderr
    assert not (tmp_path / "again").exists() or not list((tmp_path / "again").iterdir())


def test_without_the_cookie_the_job_and_the_nodes_get_an_empty_one(tmp_path: Path) -> None:
    env = {k: v for k, v in emqx_env().items() if k != "EMQX_NODE_COOKIE"}
    result = compose(tmp_path, "--profile", "emqx", "config", env=env)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["emqx-accounts"]["environment"]["EMQX_NODE_COOKIE"] == ""
    for node in EMQX_NODES:
        assert services[node]["environment"]["EMQX_NODE__COOKIE"] == ""


def test_every_account_from_env_reaches_the_bootstrap_files(
    emqx_config: dict[str, Any], tmp_path: Path
) -> None:
    services = emqx_config["services"]
    job = services["emqx-accounts"]
    # The same accounts as Mosquitto's password files, from the same .env lines.
    mosquitto_job = services["mosquitto-passwords"]["environment"]
    for var in ("LOCKER_MQTT_PASSWORD", "KIOSK_CREDENTIALS"):
        assert job["environment"][var] == mosquitto_job[var], var
    made = run_make_accounts(emqx_config, tmp_path)
    assert made.returncode == 0, made.stderr

    def accounts(name: str) -> dict[str, str]:
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o640  # the nodes' user's only
        entries = json.loads((tmp_path / name).read_text())
        assert all(entry["is_superuser"] is False for entry in entries)  # superusers skip the ACL
        return {entry["user_id"]: entry["password"] for entry in entries}

    assert accounts("kiosks.json") == {"kiosk-1": SECRETS["KIOSK_MQTT_PASSWORD"], **EXTRA_KIOSKS}
    assert accounts("service.json") == {"locker-service": SECRETS["LOCKER_MQTT_PASSWORD"]}

    # The job writes where every node reads, and emqx.conf names those files.
    accounts_dir = job["entrypoint"][-1]
    assert mounts(job)[accounts_dir] == ("emqx-accounts", "rw")
    for node in EMQX_NODES:
        assert mounts(services[node])[accounts_dir] == ("emqx-accounts", "ro"), node
    conf = emqx_conf()
    (kiosk_chain,) = conf["authentication"]
    (service_chain,) = conf["listeners"]["tcp"]["service"]["authentication"]
    for chain, file in ((kiosk_chain, "kiosks.json"), (service_chain, "service.json")):
        assert chain["backend"] == "built_in_database"
        assert chain["mechanism"] == "password_based"
        assert chain["user_id_type"] == "username"
        assert chain["bootstrap_file"] == f"{accounts_dir}/{file}"
        assert chain["bootstrap_type"] == "plain"
        assert chain["password_hash_algorithm"]["name"] not in ("plain", "md5", "sha")


@pytest.mark.parametrize(
    ("credentials", "why"),
    [
        ("kiosk-1:a kiosk-1:b", "given twice"),
        ("kiosk/1:a", "bad kiosk id"),
        ("kiosk+:a", "bad kiosk id"),
        ("locker-service-1:a", "ids starting with 'locker-'"),
        ("kiosk-1", "has no password"),
        ("kiosk-1:", "has no password"),
        ("kiosk-1:a\x01b", "control character"),
    ],
)
def test_make_accounts_refuses_what_make_passwords_refuses(
    emqx_config: dict[str, Any], tmp_path: Path, credentials: str, why: str
) -> None:
    result = run_make_accounts(emqx_config, tmp_path, KIOSK_CREDENTIALS=credentials)
    assert result.returncode != 0
    assert why in result.stderr
    assert not list(tmp_path.iterdir())


def test_emqx_nodes_have_healthchecks_data_volumes_and_the_tested_config(
    emqx_config: dict[str, Any],
) -> None:
    services = emqx_config["services"]
    data_volumes = set()
    for node in EMQX_NODES:
        service = services[node]
        assert service["healthcheck"]["test"] == ["CMD", "/opt/emqx/bin/emqx", "ctl", "status"]
        assert service["restart"] == "unless-stopped"
        volumes = mounts(service)
        source, mode = volumes["/opt/emqx/data"]
        assert mode == "rw" and not source.startswith("/"), node  # a named volume of its own
        assert source in emqx_config["volumes"]
        data_volumes.add(source)
        assert volumes["/opt/emqx/etc/emqx.conf"] == (str(EMQX_DEPLOY / "emqx.conf"), "ro")
        assert volumes["/opt/emqx/etc/acl.conf"] == (str(EMQX_DEPLOY / "acl.conf"), "ro")
    assert len(data_volumes) == len(EMQX_NODES)
    # The nodes start together once their accounts are written, and join up by their names.
    for node in EMQX_NODES:
        waits = {dep: v["condition"] for dep, v in services[node]["depends_on"].items()}
        assert waits == {"emqx-accounts": "service_completed_successfully"}, node


def test_emqx_image_is_a_pinned_release_that_has_what_the_config_needs(
    emqx_config: dict[str, Any],
) -> None:
    """bootstrap_file came with EMQX 5.7.2; from 5.9.0 its licence lets one node run free."""
    images = {emqx_config["services"][name]["image"] for name in ("emqx-accounts", *EMQX_NODES)}
    (image,) = images
    pinned = re.fullmatch(r"emqx/emqx:(\d+)\.(\d+)\.(\d+)", image)
    assert pinned, image
    assert (5, 7, 2) <= tuple(int(part) for part in pinned.groups()) < (5, 9, 0), image


def test_emqx_nodes_find_each_other_by_their_names(emqx_config: dict[str, Any]) -> None:
    services = emqx_config["services"]
    names = []
    for node in EMQX_NODES:
        service = services[node]
        host = service["hostname"]
        assert "." in host  # EMQX runs Erlang with long names
        assert host in service["networks"]["default"]["aliases"]
        assert service["environment"]["EMQX_NODE__NAME"] == f"emqx@{host}"
        names.append(f"emqx@{host}")
    cluster = emqx_conf()["cluster"]
    assert cluster["discovery_strategy"] == "static"
    assert cluster["static"]["seeds"] == names


def test_emqx_listeners_and_chains_tie_client_ids_to_accounts(
    emqx_config: dict[str, Any],
) -> None:
    """As Mosquitto's two listeners (ADR 0063): the kiosks' takes the kiosks' accounts and makes a
    kiosk's client id its user name; the service's, on the compose network only, takes the
    service's account alone; no other listener takes anyone."""
    conf = emqx_conf()
    listeners = conf["listeners"]
    kiosks, service = listeners["tcp"]["default"], listeners["tcp"]["service"]
    assert kiosks["bind"] == "0.0.0.0:1883"
    assert "authentication" not in kiosks  # the global chain: the kiosks' accounts
    assert conf["zones"][kiosks["zone"]]["mqtt"]["use_username_as_clientid"] is True
    assert service["bind"] == "0.0.0.0:1884"
    assert service.get("zone", "default") == "default"
    assert set(listeners["tcp"]) == {"default", "service"}
    for kind in ("ssl", "ws", "wss"):
        assert listeners[kind]["default"]["enable"] is False, kind
    assert conf["dashboard"]["listeners"]["http"]["bind"].startswith("127.0.0.1:")
    for node in EMQX_NODES:
        published = [str(port["target"]) for port in emqx_config["services"][node]["ports"]]
        assert published == ["1883"], node


def test_emqx_acl_grants_exactly_the_mosquitto_rule() -> None:
    rules = read_erlang_terms((EMQX_DEPLOY / "acl.conf").read_text())
    allow, deny, everyone = Atom("allow"), Atom("deny"), Atom("all")
    assert rules == [
        (allow, (Atom("username"), "locker-service"), everyone, ["lockers/v1/#"]),
        (allow, everyone, everyone, ["lockers/v1/${username}/#"]),
        (deny, everyone),
    ]
    authorization = emqx_conf()["authorization"]
    assert authorization["no_match"] == "deny"
    assert authorization["sources"] == [
        {"type": "file", "enable": True, "path": "/opt/emqx/etc/acl.conf"}
    ]

    mosquitto = parse_acl((ROOT / "docs" / "deploy" / "mosquitto" / "acl").read_text())
    users = ("locker-service", "kiosk-a", "kiosk-b")
    topics = (
        "lockers/v1/kiosk-a/events",
        "lockers/v1/kiosk-a/cmd",
        "lockers/v1/kiosk-a/replies/r1",
        "lockers/v1/kiosk-a",
        "lockers/v1/kiosk-b/cmd",
        "lockers/v2/kiosk-a/cmd",
        "other/topic",
        "$SYS/broker/uptime",
    )
    filters = (
        *topics,
        "lockers/v1/kiosk-a/#",
        "lockers/v1/+/cmd",
        "lockers/v1/#",
        "lockers/#",
        "#",
        "$SYS/#",
    )
    for user in users:
        for topic in topics:
            expected = mosquitto.may_use_topic(user, topic, Access.WRITE)
            assert emqx_allows(rules, user, "publish", topic) is expected, (user, topic)
        for topic_filter in filters:
            # Mosquitto's $SYS grant is for its own healthcheck; EMQX's grants no $SYS at all.
            expected = mosquitto.may_subscribe(user, topic_filter) and "$SYS" not in topic_filter
            assert emqx_allows(rules, user, "subscribe", topic_filter) is expected, (
                user,
                topic_filter,
            )
    assert emqx_allows(rules, "kiosk-a", "subscribe", "lockers/v1/kiosk-a/cmd")
    assert not emqx_allows(rules, "kiosk-a", "publish", "lockers/v1/kiosk-b/events")
    assert emqx_allows(rules, "locker-service", "publish", "lockers/v1/kiosk-b/cmd")
    assert not emqx_allows(rules, "locker-service", "subscribe", "$SYS/#")


def test_service_and_bridge_use_every_emqx_node_under_the_profile(
    emqx_config: dict[str, Any],
) -> None:
    """With the EMQX lines of env.example: the service on every node's listener of its own, the
    bridge on every node's kiosks' listener, the nodes in the same order for both."""
    services = emqx_config["services"]
    service_env = services["service"]["environment"]
    bridge_env = services["bridge"]["environment"]
    listeners = emqx_conf()["listeners"]["tcp"]
    port = {name: int(listener["bind"].rsplit(":", 1)[1]) for name, listener in listeners.items()}
    service_url = BrokerEndpoint.parse(service_env["LOCKER_MQTT_URL"])
    bridge_url = BrokerEndpoint.parse(bridge_env["BRIDGE_BROKER_URL"])
    assert service_url.hosts == tuple((node, port["service"]) for node in EMQX_NODES)
    assert bridge_url.hosts == tuple((node, port["default"]) for node in EMQX_NODES)
    assert service_env["LOCKER_MQTT_USERNAME"] == "locker-service"
    assert bridge_env["BRIDGE_USERNAME"] == "kiosk-1"
    # The service's settings accept the URL (its validator parses every node).
    Settings(
        environment="production",
        secret_key=service_env["LOCKER_SECRET_KEY"],
        mqtt_url=service_env["LOCKER_MQTT_URL"],
    )


# A reader for the subset of HOCON that emqx.conf is written in: objects, arrays, dotted keys,
# quoted strings and plain words, `#` comments; objects given twice are merged, as HOCON does.
_HOCON = re.compile(
    r"""(?P<skip>[ \t\r]+|\#[^\n]*)|(?P<newline>\n)|(?P<string>"(?:[^"\\\n]|\\.)*")
    |(?P<punct>[{}\[\],=])|(?P<word>[^\s{}\[\],=:\#"]+)""",
    re.VERBOSE,
)


def emqx_conf() -> dict[str, Any]:
    return read_hocon((EMQX_DEPLOY / "emqx.conf").read_text())


def tokens_of(pattern: re.Pattern[str], text: str) -> list[tuple[str, str]]:
    """(group name, text) of each match of `pattern` over `text`, but those of group skip."""
    found = []
    position = 0
    while position < len(text):
        match = pattern.match(text, position)
        assert match, f"unreadable at {text[position : position + 40]!r}"
        position = match.end()
        if match.lastgroup != "skip":
            found.append((match.lastgroup or "", match.group()))
    return found


def read_hocon(text: str) -> dict[str, Any]:
    tokens = [*tokens_of(_HOCON, text), ("end", "")]
    at = 0

    def take() -> tuple[str, str]:
        nonlocal at
        at += 1
        return tokens[at - 1]

    def skip_separators() -> None:
        nonlocal at
        while tokens[at][1] in ("\n", ","):
            at += 1

    def value() -> Any:
        kind, text = take()
        if text == "{":
            return members("}")
        if text == "[":
            items = []
            skip_separators()
            while tokens[at][1] != "]":
                items.append(value())
                skip_separators()
            take()
            return items
        if kind == "string":
            return json.loads(text)
        assert kind == "word", f"expected a value, found {text!r}"
        return {"true": True, "false": False}.get(text, int(text) if text.isdigit() else text)

    def members(close: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        while True:
            skip_separators()
            kind, key = take()
            if key == close:
                return found
            assert kind in ("word", "string"), f"expected a key, found {key!r}"
            path = [json.loads(key)] if kind == "string" else key.split(".")
            if tokens[at][1] == "=":
                take()
            merge(found, path, value())

    def merge(into: dict[str, Any], path: list[str], new: Any) -> None:
        for key in path[:-1]:
            into = into.setdefault(key, {})
        old = into.get(path[-1])
        if isinstance(old, dict) and isinstance(new, dict):
            for key, item in new.items():
                merge(old, [key], item)
        else:
            into[path[-1]] = new

    return members("")


@dataclass(frozen=True)
class Atom:
    name: str


# A reader for the Erlang terms of EMQX's acl.conf: tuples, lists, atoms, strings, `%` comments.
_ERLANG = re.compile(
    r"""(?P<skip>\s+|%[^\n]*)|(?P<string>"[^"\\]*")|(?P<atom>[a-z][A-Za-z0-9_@]*|'[^'\\]*')
    |(?P<punct>[{}\[\],.])""",
    re.VERBOSE,
)


def read_erlang_terms(text: str) -> list[Any]:
    tokens = tokens_of(_ERLANG, text)
    at = 0

    def term() -> Any:
        nonlocal at
        kind, text = tokens[at]
        at += 1
        if text in ("{", "["):
            close = "}" if text == "{" else "]"
            items = []
            while tokens[at][1] != close:
                items.append(term())
                if tokens[at][1] == ",":
                    at += 1
            at += 1
            return tuple(items) if close == "}" else items
        if kind == "string":
            return text[1:-1]
        assert kind == "atom", f"expected a term, found {text!r}"
        return Atom(text.strip("'"))

    terms = []
    while at < len(tokens):
        terms.append(term())
        assert tokens[at][1] == ".", f"a term ends with '.', not {tokens[at][1]!r}"
        at += 1
    return terms


def emqx_allows(rules: list[Any], username: str, action: str, topic: str) -> bool:
    """EMQX's file authorization with no_match = deny, for the rule forms acl.conf uses: the
    first rule matching the client, the action and the topic decides. A publish's topic matches a
    rule's filter as MQTT matches; a subscription's filter must lie within it, a wildcard
    matching only the same wildcard (EMQX's emqx_topic:match)."""
    for rule in rules:
        if len(rule) == 2:
            assert rule[1] == Atom("all"), rule
            return rule[0] == Atom("allow")
        permission, who, what, filters = rule
        if who != Atom("all"):
            assert who[0] in (Atom("username"), Atom("user")), who
            if who[1] != username:
                continue
        if what not in (Atom("all"), Atom(action)):
            continue
        for rule_filter in filters:
            assert isinstance(rule_filter, str), rule_filter
            rule_filter = rule_filter.replace("${username}", username)
            if action == "publish":
                matched = topic_matches_sub(rule_filter, topic)
            else:
                matched = filter_within(topic, rule_filter)
            if matched:
                return bool(permission == Atom("allow"))
    return False
