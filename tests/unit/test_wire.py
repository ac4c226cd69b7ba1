"""What AMQP can carry: header values, the content header frame, carried-over headers."""

from __future__ import annotations

import decimal
import struct
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pamqp.frame
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import decode, encode
from pamqp.header import ContentHeader

from amqp_events import ConfigurationError, PublishError
from amqp_events._headers import check_user_headers
from amqp_events._transport._base import OutgoingProperties
from amqp_events._transport._wire import (
    FRAME_MAX_DEFAULT,
    MAX_MESSAGE_SIZE_DEFAULT,
    amqp_properties,
    carried_headers,
    check_header_frame,
    header_frame_size,
    safe_text,
)

# -- every value check_user_headers accepts travels unchanged; every one it refuses would not --


def round_trips(value: Any) -> bool:
    """Whether pamqp encodes ``{"h": value}`` and decodes it back to an equal table."""
    try:
        encoded = encode.field_table({"h": value})
    except (TypeError, ValueError, OverflowError, struct.error):
        return False
    _, decoded = decode.field_table(encoded)
    return bool(decoded == {"h": value})


surrogates = st.sampled_from(["\ud800", "a\udfff", "\udc80x"])
texts = st.text(max_size=8) | st.builds(str.__add__, st.text(max_size=4), surrogates)
names = texts | st.text(min_size=120, max_size=140) | st.just("é" * 65)
offsets = st.integers(-23, 23).map(lambda hours: timezone(timedelta(hours=hours)))
datetimes = st.datetimes(timezones=st.none() | st.just(UTC) | offsets) | st.datetimes(
    min_value=datetime(1969, 12, 31), max_value=datetime(2106, 2, 8), timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=0))
scalars = st.one_of(
    texts,
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64 - 1]),
    st.booleans(),
    st.none(),
    st.floats(),
    st.floats(width=32),
    st.decimals(),
    st.decimals(places=3, min_value=-(10**8), max_value=10**8),
    datetimes,
    st.binary(max_size=4),
    st.binary(max_size=4).map(bytearray),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(names, inner, max_size=3)
    ),
    max_leaves=8,
)


def accepted(headers: dict[str, Any]) -> bool:
    try:
        check_user_headers(headers)
    except ConfigurationError:
        return False
    return True


@given(values)
def test_a_value_is_accepted_exactly_when_it_travels_unchanged(value: Any) -> None:
    assert accepted({"h": value}) == round_trips(value)


@given(names.filter(lambda name: name not in ("service", "CC", "BCC")))
def test_a_name_is_accepted_exactly_when_it_travels_unchanged(name: str) -> None:
    if name.startswith("amqp-events-"):
        return
    try:
        encoded = encode.field_table({name: 1})
    except ValueError:
        travels = False
    else:
        travels = decode.field_table(encoded)[1] == {name: 1}
    assert accepted({name: 1}) == travels


@pytest.mark.parametrize(
    ("value", "wanted"),
    [
        ((1, 2), "a tuple cannot be encoded by pamqp: send a list"),
        (2**63, "outside AMQP's signed 64-bit range: send it as a str"),
        (b"raw", "send a bytearray (AMQP byte array) or a str"),
        ("bad \ud800", "lone surrogate"),
        (0.1, "pamqp sends every float as a 32-bit float ('f'); send it as a str, or as a Decimal"),
        (float("nan"), "32-bit float"),
        (decimal.Decimal("NaN"), "is not finite"),
        (decimal.Decimal("1E-300"), "does not fit AMQP's decimal"),
        (decimal.Decimal(2**31), "signed 32-bit value"),
        (datetime(2024, 1, 1), "give it a tzinfo (datetime.UTC)"),
        (datetime(2024, 1, 1, 0, 0, 0, 5, tzinfo=UTC), "use .replace(microsecond=0)"),
        (datetime(1960, 1, 1, tzinfo=UTC), "1970 to 2106"),
        ([1, {"k": (1,)}], "in a list: in table key 'k': a tuple"),
        ({"x" * 129: 1}, "over AMQP's 128 (pamqp would silently truncate it)"),
        (object(), "a object value cannot be sent in AMQP headers"),
    ],
)
def test_refusals_name_the_header_and_the_fix(value: Any, wanted: str) -> None:
    with pytest.raises(ConfigurationError, match="header 'h' cannot be sent") as error:
        check_user_headers({"h": value})
    assert wanted in str(error.value)


def test_long_header_names_are_refused() -> None:
    check_user_headers({"n" * 128: 1})
    with pytest.raises(ConfigurationError, match="129 UTF-8 bytes, over AMQP's 128"):
        check_user_headers({"n" * 129: 1})
    with pytest.raises(ConfigurationError, match="130 UTF-8 bytes"):
        check_user_headers({"é" * 65: 1})


def test_cc_must_be_a_list() -> None:
    check_user_headers({"CC": ["a", "b"]})
    with pytest.raises(ConfigurationError, match="'CC' names extra destination queues"):
        check_user_headers({"CC": ("a",)})


def test_accepted_values_of_every_type() -> None:
    check_user_headers(
        {
            "s": "café",
            "i": -(2**63),
            "f": 0.5,
            "inf": float("inf"),
            "d": decimal.Decimal("-12.345"),
            "t": datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))),
            "b": bytearray(b"\xff"),
            "n": None,
            "nested": [{"k": [1, "x", True]}],
        }
    )


# -- the content header frame --------------------------------------------------------------------


def sent_frame_size(headers: dict[str, Any], properties: OutgoingProperties | None) -> int:
    """The size of the frame aiormq writes: our properties plus its generated message_id."""
    props = amqp_properties(headers, properties)
    if not props.message_id:
        props.message_id = "5f0c" * 8
    return len(pamqp.frame.marshal(ContentHeader(0, 10, props), 1))


@pytest.mark.parametrize(
    ("headers", "properties"),
    [
        ({}, None),
        ({"service": "orders", "CC": ["a", "b"]}, None),
        ({"service": "s", "big": "x" * 5000}, None),
        ({"service": "s"}, OutgoingProperties(correlation_id="c" * 32, reply_to="r")),
        ({"t": 1.5}, OutgoingProperties(message_id="m", expiration=1000, content_type="x/y")),
    ],
)
def test_header_frame_size_is_the_size_of_the_frame_sent(
    headers: dict[str, Any], properties: OutgoingProperties | None
) -> None:
    assert header_frame_size(headers, properties) == sent_frame_size(headers, properties)


def test_defaults_are_rabbitmqs() -> None:
    assert FRAME_MAX_DEFAULT == 131072
    assert MAX_MESSAGE_SIZE_DEFAULT == 134217728


def test_check_header_frame_refuses_a_frame_over_frame_max() -> None:
    headers = {"big": "x" * 200}
    size = header_frame_size(headers, None)
    check_header_frame("ex", "key", headers, None, size)
    with pytest.raises(PublishError) as error:
        check_header_frame("ex", "key", headers, None, size - 1)
    assert str(error.value) == (
        f"message to exchange 'ex' with routing key 'key' not sent: its content header frame "
        f"(properties and headers) is {size} bytes, over the connection's frame_max of "
        f"{size - 1} bytes, and the broker would close the connection; send fewer or smaller "
        "headers and put the data in the body"
    )


def test_check_header_frame_names_an_unencodable_header() -> None:
    with pytest.raises(PublishError, match="header 'bad' cannot be encoded: a tuple"):
        check_header_frame("ex", "key", {"ok": 1, "bad": (1,)}, None, FRAME_MAX_DEFAULT)
    with pytest.raises(PublishError, match="it cannot be encoded .*255 bytes"):
        check_header_frame(
            "ex", "key", {}, OutgoingProperties(message_id="m" * 300), FRAME_MAX_DEFAULT
        )


# -- headers a retry or dead letter carries over -------------------------------------------------


def test_carried_headers_drop_the_brokers_and_sender_selected_ones() -> None:
    delivered = {
        "service": "orders",
        "trace": "t-1",
        "CC": ["q"],
        "BCC": ["r"],
        "x-death": [{"count": 1}],
        "x-first-death-queue": "q",
        "x-delivery-count": 2,
        "amqp-events-attempt": 1,
        "raw": b"\xff",
        "nested": {"k": [b"\x80", "caf\udce9"]},
        "when": datetime(2024, 1, 1, tzinfo=UTC),
    }
    carried = carried_headers(delivered)
    assert carried == {
        "service": "orders",
        "trace": "t-1",
        "amqp-events-attempt": 1,
        "raw": bytearray(b"\xff"),
        "nested": {"k": [bytearray(b"\x80"), "caf\ufffd"]},
        "when": datetime(2024, 1, 1, tzinfo=UTC),
    }
    assert type(carried["raw"]) is bytearray
    assert "x-death" in delivered  # a new dict
    encode.field_table(carried)  # all of it encodable


def test_safe_text_is_valid_utf8_within_the_limit() -> None:
    assert safe_text("short", 10) == "short"
    assert safe_text("bad \ud800 text", 100) == "bad \ufffd text"
    cut = safe_text("é" * 100, 11)
    assert cut == "éééé…"
    assert len(cut.encode()) <= 11
    assert safe_text("abcdef", 2) == "ab"
    for limit in range(30):
        text = safe_text("aé€😀" * 5, limit)
        assert len(text.encode("utf-8")) <= limit
