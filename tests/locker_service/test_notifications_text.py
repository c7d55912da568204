"""Pure parts of notifications: contact to channel, message text, the QR image."""

from __future__ import annotations

import dataclasses
import io
from datetime import UTC, datetime

import pytest
import zxingcpp
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from locker_service.contacts.channels import NoChannel, channels_for, with_dedupe_header
from locker_service.notifications.messages import PickupDetails, compose, format_code
from locker_service.notifications.qr import qr_png

EMAIL = "mailtos://u:p@smtp.example.com?to={to}"
SMS = "twilio://sid:tok@+15550001111/{to}"


def test_contacts_map_to_the_configured_channels() -> None:
    kw = {"email_url": EMAIL, "sms_url": SMS, "allow_contact_urls": True}
    assert channels_for(" li.na@example.com ", **kw) == [
        "mailtos://u:p@smtp.example.com?to=li.na@example.com"
    ]
    assert channels_for("+86 (138) 0013-8000", **kw) == [
        "twilio://sid:tok@+15550001111/+8613800138000"
    ]
    assert channels_for("wecombot://key", **kw) == ["wecombot://key"]
    assert channels_for("json://h/a\n mailto://h?to=a@x,b@y", **kw) == [
        "json://h/a",
        "mailto://h?to=a@x,b@y",
    ]
    with pytest.raises(NoChannel, match="must be a URL"):
        channels_for("json://h/a alice", **kw)
    with pytest.raises(NoChannel):
        channels_for("not a contact", **kw)
    with pytest.raises(NoChannel, match="switched off"):
        channels_for("json://internal/x", email_url=EMAIL, sms_url=SMS, allow_contact_urls=False)
    with pytest.raises(NoChannel, match="SMS"):
        channels_for("+8613800138000", email_url=EMAIL, sms_url=None, allow_contact_urls=True)


def test_the_dedupe_key_rides_as_a_header_where_the_scheme_has_headers() -> None:
    assert with_dedupe_header("json://h/p", "order:1:ready") == (
        "json://h/p?+X-Locker-Notification=order%3A1%3Aready"
    )
    assert with_dedupe_header("mailto://h?to=a@b", "k").endswith("&+X-Locker-Notification=k")
    assert with_dedupe_header("wecombot://key", "k") == "wecombot://key"


def test_message_text_carries_code_place_deadline_and_link() -> None:
    details = PickupDetails(
        site_name="Harbour Tower",
        kiosk_name="Lobby",
        compartment=3,
        deadline=datetime(2026, 1, 1, 10, 0, tzinfo=UTC),
        timezone="Europe/Berlin",
        code="01234567",
        page_url="https://x/p/t",
    )
    text = compose("Hello Li Na, your order is ready.", details)
    assert text.splitlines() == [
        "Hello Li Na, your order is ready.",
        "",
        "Locker: Harbour Tower, Lobby, compartment 3",
        "Pickup code: 0123 4567",
        "Scan the attached QR code at the locker's scanner, or type the code.",
        "Collect before: 2026-01-01 11:00 (CET)",
        "Your pickup page: https://x/p/t",
    ]
    # In her language (ADR 0122): every line, and her page opens in it.
    zh = dataclasses.replace(details, language="zh-Hans")
    assert compose("李娜，您好：您的订单已可取餐。", zh).splitlines() == [
        "李娜，您好：您的订单已可取餐。",
        "",
        "取餐柜：Harbour Tower, Lobby, 3 号柜格",
        "取餐码：0123 4567",
        "请在取餐柜的扫码口扫描附件中的二维码，或输入取餐码。",
        "请在此时间前取餐：2026-01-01 11:00 (CET)",
        "您的取餐页面：https://x/p/t?lang=zh-Hans",
    ]
    bad_zone = PickupDetails("S", "", None, details.deadline, "Mars/Olympus", None, None)
    assert compose("Expired.", bad_zone).splitlines() == ["Expired.", "", "Locker: S"]
    assert format_code("12345678") == "1234 5678"


@given(st.binary(min_size=32, max_size=32))
def test_qr_images_decode_to_what_they_carry(raw: bytes) -> None:
    import base64

    token = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    [result] = zxingcpp.read_barcodes(Image.open(io.BytesIO(qr_png(token))))
    assert result.text == token
