"""Where notification URLs may point: a scheme allowlist, no internal host unless allowed."""

from __future__ import annotations

import pytest

from locker_service.contacts.targets import TargetPolicy, TargetRefused, check_urls, resolve

POLICY = TargetPolicy.of(["json", "jsons", "mailtos", "slack"])


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.0.0.5", "192.168.1.1", "169.254.169.254", "::1", "fe80::1%eth0",
     "::ffff:127.0.0.1", "fd00::1", "224.0.0.1", "0.0.0.0"],
)  # fmt: skip
def test_internal_addresses_are_refused(address: str) -> None:
    assert POLICY.refused_address([address]) is not None


def test_global_addresses_pass_and_an_allowed_network_lets_its_own_through() -> None:
    assert POLICY.refused_address(["93.184.216.34", "2606:2800:220:1::1"]) is None
    allowing = TargetPolicy.of(["json"], ["127.0.0.1/32"])
    assert allowing.refused_address(["127.0.0.1"]) is None
    assert allowing.refused_address(["127.0.0.2"]) == "127.0.0.2"


def test_which_hosts_a_url_connects_to() -> None:
    assert POLICY.hosts("jsons://hooks.example.com/x") == ["hooks.example.com"]
    # E-mail connects to its smtp= server too; a vendor's plugin to the vendor alone.
    assert POLICY.hosts("mailtos://u:p@example.com?smtp=relay.internal:587") == [
        "example.com",
        "relay.internal",
    ]
    assert POLICY.hosts("slack://T1/B1/C1") == []


def test_a_scheme_off_the_list_or_a_non_url_is_refused_with_its_code() -> None:
    with pytest.raises(TargetRefused) as refused:
        POLICY.hosts("form://example.com/x")
    assert refused.value.code == "target_scheme_not_allowed"
    with pytest.raises(TargetRefused) as refused:
        POLICY.hosts("just words")
    assert refused.value.code == "target_invalid"


async def test_the_check_resolves_names_for_real() -> None:
    assert "127.0.0.1" in await resolve("localhost")
    with pytest.raises(TargetRefused) as refused:
        await check_urls(["json://localhost:9/x"], POLICY)
    assert refused.value.code == "target_address_not_allowed"
    allowing = TargetPolicy.of(["json"], ["127.0.0.0/8", "::1/128"])
    assert await check_urls(["json://localhost:9/x"], allowing) == ["json://localhost:9/x"]
    with pytest.raises(TargetRefused) as refused:
        await check_urls(["json://127.0.0.1/x"] * 11, allowing)
    assert refused.value.code == "target_too_many"
