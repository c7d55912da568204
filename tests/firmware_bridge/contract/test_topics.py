"""The contract's topic tree: the one parser from a topic to (kiosk, kind) and the names built."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.contract import Topics, classify_topic


def test_every_topic_a_kiosk_publishes_is_classified_by_what_it_carries() -> None:
    topics = Topics("k1")
    assert classify_topic(topics.status) == ("k1", "status")
    assert classify_topic(topics.events) == ("k1", "event")
    assert classify_topic(topics.telemetry) == ("k1", "telemetry")
    assert classify_topic(topics.telemetry_minutes) == ("k1", "minutes")
    assert classify_topic(topics.compartment_state(12)) == ("k1", "snapshot")
    assert classify_topic(topics.replies("r1")) == ("k1", "reply")


def test_topics_outside_what_a_kiosk_publishes_are_none() -> None:
    for stranger in (
        "lockers/v1/k1/cmd",
        "lockers/v1/k1/compartments/x/state",
        "lockers/v1//status",
        "lockers/v2/k1/status",
        "lockers/v1/k1/status/extra",
        "other",
    ):
        assert classify_topic(stranger) is None, stranger


def test_replies_live_under_the_kiosks_own_prefix_so_its_acl_covers_them() -> None:
    topics = Topics("k7")
    assert topics.replies("service-1").startswith(topics.prefix + "/")
    assert Topics.wildcard("events") == "lockers/v1/+/events"


@settings(max_examples=300)
@given(st.text(alphabet="lockersv1/abc+#$0123456789", max_size=60))
def test_topic_classification_never_raises(topic: str) -> None:
    result = classify_topic(topic)
    assert result is None or (result[0] and topic.startswith("lockers/v1/"))
