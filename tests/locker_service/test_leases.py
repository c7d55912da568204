"""The pure assignment of kiosks to live replicas (rendezvous hashing)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from locker_service.kiosk_link.leases import assign, owner_of

ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._", min_size=1, max_size=20)


@given(kiosks=st.sets(ids, max_size=50), replicas=st.sets(ids, min_size=1, max_size=8))
def test_every_kiosk_has_exactly_one_owner_among_the_live_replicas(
    kiosks: set[str], replicas: set[str]
) -> None:
    owners = assign(kiosks, replicas)
    assert set(owners) == kiosks
    assert set(owners.values()) <= replicas
    # Every replica computes the same owner, whatever order it read the replicas in.
    assert owners == assign(sorted(kiosks, reverse=True), sorted(replicas, reverse=True))
    for kiosk, owner in owners.items():
        assert owner_of(kiosk, replicas) == owner


@given(kiosks=st.sets(ids, max_size=30), replicas=st.sets(ids, min_size=2, max_size=8))
def test_a_replica_leaving_moves_only_its_own_kiosks(kiosks: set[str], replicas: set[str]) -> None:
    leaving = sorted(replicas)[0]
    before = assign(kiosks, replicas)
    after = assign(kiosks, replicas - {leaving})
    moved = {kiosk for kiosk in kiosks if before[kiosk] != after[kiosk]}
    assert moved == {kiosk for kiosk, owner in before.items() if owner == leaving}


@settings(max_examples=25, deadline=None)
@given(replica_count=st.integers(min_value=1, max_value=7), salt=ids)
def test_a_replica_joining_takes_about_one_in_n_kiosks_and_nothing_else_moves(
    replica_count: int, salt: str
) -> None:
    kiosks = {f"{salt}-kiosk-{i}" for i in range(2000)}
    replicas = {f"{salt}-replica-{i}" for i in range(replica_count)}
    joining = f"{salt}-replica-new"
    before = assign(kiosks, replicas)
    after = assign(kiosks, replicas | {joining})
    moved = {kiosk for kiosk in kiosks if before[kiosk] != after[kiosk]}
    assert all(after[kiosk] == joining for kiosk in moved)  # only to the newcomer
    share = len(moved) / len(kiosks)
    expected = 1 / (replica_count + 1)
    # 2000 kiosks: the share's standard deviation is at most 1.2 points; 5 points is > 4 sigma.
    assert abs(share - expected) < 0.05, (share, expected)


def test_no_live_replica_owns_nothing() -> None:
    assert owner_of("k", []) is None
    assert assign({"k"}, set()) == {}
