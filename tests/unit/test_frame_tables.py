"""Field tables and content properties of the hand-written codec against pamqp, the oracle: the
same bytes written, the same Python values read (of the same types), both directions."""

from __future__ import annotations

import decimal
import struct
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands as spec
from pamqp import decode as pamqp_decode
from pamqp import encode as pamqp_encode

from amqp_events._transport._frame_tables import (
    FrameError,
    Properties,
    PropertiesTemplate,
    decode_properties,
    decode_table,
    encode_properties,
    encode_table,
)

FAST = settings(max_examples=80, deadline=None, derandomize=True)

INT_BOUNDS = [-(2**63), -(2**31) - 1, -(2**31), -32769, -32768, -129, -128, -1, 0, 127, 128]
INT_BOUNDS += [32767, 32768, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1]
text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
names = text.filter(lambda name: len(name.encode()) <= 128)
shortstrs = text  # up to 160 bytes; 255 is tested on its own
decimals = st.builds(
    lambda mantissa, exponent: decimal.Decimal(mantissa).scaleb(exponent),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-255, 3),
).filter(lambda value: _pamqp_encodes(value))
seconds = st.integers(0, 0xFFFFFFFF)
aware = seconds.map(lambda second: datetime.fromtimestamp(second, UTC))
scalars = st.one_of(
    text,
    st.booleans(),
    st.sampled_from(INT_BOUNDS),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(width=32, allow_nan=False),
    decimals,
    aware,
    aware.map(lambda moment: moment.replace(tzinfo=None)),  # naive: pamqp takes it for UTC
    st.binary(max_size=20).map(bytearray),
    st.none(),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(names, inner, max_size=4),
    max_leaves=12,
)
tables = st.dictionaries(names, values, max_size=8)


def _pamqp_encodes(value: Any) -> bool:
    try:
        pamqp_encode.encode_table_value(value)
    except TypeError:
        return False
    return True


def same(ours: Any, theirs: Any) -> bool:
    """Equal, and of the same types all the way down (``True == 1`` is not enough)."""
    if type(ours) is not type(theirs):
        return False
    if isinstance(ours, dict):
        return ours.keys() == theirs.keys() and all(same(ours[k], theirs[k]) for k in ours)
    if isinstance(ours, list):
        return len(ours) == len(theirs) and all(map(same, ours, theirs))
    if isinstance(ours, decimal.Decimal):
        return str(ours) == str(theirs)  # the same digits and exponent, not only the value
    return bool(ours == theirs)


def read(data: bytes) -> dict[str, Any]:
    return decode_table(data, 4, len(data))


@FAST
@given(tables)
def test_tables_encode_and_decode_as_pamqp(table: dict[str, Any]) -> None:
    data = pamqp_encode.field_table(table)
    assert encode_table(table) == data
    assert same(read(data), pamqp_decode.field_table(data)[1])


@FAST
@given(
    st.dictionaries(
        names,
        st.one_of(text, st.integers(-(2**63), 2**63 - 1), st.booleans(), st.none(), aware),
        max_size=8,
    )
)
def test_exact_values_come_back_unchanged(table: dict[str, Any]) -> None:
    assert same(read(encode_table(table)), table)


FOREIGN: list[
    tuple[bytes, Any]
] = [  # what other clients and RabbitMQ write, which pamqp's encoder never does
    (b"B\xff", 255),
    (b"L" + struct.pack(">q", -5), -5),  # pamqp reads "L" as signed
    (b"d" + struct.pack(">d", 0.1), 0.1),  # a double, which pamqp never writes
    (b"\x00", None),
    (b"S\x00\x00\x00\x02\xff\xfe", b"\xff\xfe"),  # not UTF-8: stays bytes
    (b"T" + struct.pack(">Q", 4_102_444_800_000), datetime(2100, 1, 1, tzinfo=UTC)),  # ms
    (b"D\x02" + struct.pack(">i", -12345), decimal.Decimal("-123.45")),
    (b"t\x02", True),
    (b"A\x00\x00\x00\x00", []),
    (b"F\x00\x00\x00\x00", {}),
]


@pytest.mark.parametrize(("encoded", "value"), FOREIGN)
def test_foreign_value_types_decode_as_pamqp_reads_them(encoded: bytes, value: Any) -> None:
    entry = b"\x01k" + encoded
    data = struct.pack(">I", len(entry)) + entry
    theirs = pamqp_decode.field_table(data)[1]
    assert same(read(data), theirs)
    assert same(read(data)["k"], value)


@pytest.mark.parametrize(
    ("table", "error", "words"),
    [
        ({"k": b"raw"}, TypeError, "bytearray"),
        ({"k": 2**63}, ValueError, "64-bit"),
        ({"k": decimal.Decimal("NaN")}, ValueError, "not finite"),
        ({"k": decimal.Decimal("1E-256")}, ValueError, "scale"),
        ({"k": 1e300}, ValueError, "32-bit float"),
        ({"k": datetime(1969, 12, 31, tzinfo=UTC)}, ValueError, "before 1970"),
        ({"k": object()}, TypeError, "object"),
        ({"k": {"inner": (1, 2)}}, TypeError, "'inner'"),
        ({"n" * 129: 1}, ValueError, "129 UTF-8 bytes, over 128"),
        ({"k": "\ud800"}, ValueError, "surrogate"),
        ({1: 1}, TypeError, "must be a str"),
    ],
)
def test_unencodable_values_fail_naming_the_field(
    table: dict[Any, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words) as raised:
        encode_table(table)
    assert "field" in str(raised.value)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\x01kQ", "unknown field value type b'Q'"),
        (b"\x01kS\x00\x00\x00\x09ab", "past its length"),
        (b"\x01kA\x00\x00\x00\x01b", "past its length"),
    ],
)
def test_malformed_tables_raise_frame_error(data: bytes, words: str) -> None:
    with pytest.raises(FrameError, match=words):
        decode_table(data + b"\x00" * 16, 0, len(data))


# -- content properties ---------------------------------------------------------------------------

properties = st.builds(
    Properties,
    content_type=st.none() | shortstrs,
    content_encoding=st.none() | shortstrs,
    headers=st.none() | tables,
    delivery_mode=st.sampled_from([None, 1, 2]),
    priority=st.none() | st.integers(0, 255),
    correlation_id=st.none() | shortstrs,
    reply_to=st.none() | shortstrs,
    expiration=st.none() | shortstrs,
    message_id=st.none() | shortstrs,
    timestamp=st.none() | aware,
    message_type=st.none() | shortstrs,
    user_id=st.none() | shortstrs,
    app_id=st.none() | shortstrs,
)


def pamqp_properties(props: Properties) -> spec.Basic.Properties:
    fields = {name: getattr(props, name) for name in spec.Basic.Properties.__slots__}
    fields["cluster_id"] = props.cluster_id or ""
    return spec.Basic.Properties(**fields)


def pamqp_read(data: bytes) -> spec.Basic.Properties:
    back = spec.Basic.Properties()
    back.unmarshal(struct.unpack(">H", data[:2])[0], data[2:])
    return back


def assert_same_properties(ours: Properties, theirs: spec.Basic.Properties) -> None:
    for name in spec.Basic.Properties.__slots__:
        expected = getattr(theirs, name)
        if name == "cluster_id" and expected == "":
            expected = None  # pamqp's default for an absent cluster_id
        assert same(getattr(ours, name), expected), name


@FAST
@given(properties)
def test_properties_encode_and_decode_as_pamqp(props: Properties) -> None:
    data = pamqp_properties(props).marshal()
    assert encode_properties(props) == data
    assert_same_properties(decode_properties(data, 0, len(data)), pamqp_read(data))


@pytest.mark.parametrize("size", [0, 1, 127, 128, 254, 255])
def test_shortstr_properties_up_to_255_bytes(size: int) -> None:
    value = ("é" * size)[: size // 2] + "x" * (size % 2)  # two UTF-8 bytes a character
    props = Properties(message_id=value, app_id="a" * size)
    data = pamqp_properties(props).marshal()
    assert encode_properties(props) == data
    assert_same_properties(decode_properties(data, 0, len(data)), pamqp_read(data))


def test_empty_strings_are_left_out_as_pamqp_does() -> None:
    props = Properties(content_type="", message_id="", headers={})
    assert encode_properties(props) == pamqp_properties(props).marshal() == b"\x20\x00" + bytes(4)


def test_flag_bits_follow_the_spec() -> None:
    names = [field for field in spec.Basic.Properties.__slots__ if field != "cluster_id"]
    for bit, name in zip(range(15, 2, -1), names, strict=True):
        value: Any = {"headers": {}, "delivery_mode": 2, "priority": 0}.get(name, "x")
        if name == "timestamp":
            value = datetime(2026, 1, 1, tzinfo=UTC)
        data = encode_properties(Properties(**{name: value}))
        assert struct.unpack(">H", data[:2])[0] == 1 << bit, name


per_message = st.fixed_dictionaries(
    {},
    optional={
        "headers": tables,
        "correlation_id": shortstrs,
        "reply_to": shortstrs,
        "expiration": shortstrs,
        "message_id": shortstrs,
        "timestamp": aware,
    },
)


@FAST
@given(properties, per_message)
def test_a_template_encodes_its_constants_with_each_messages_values(
    constant: Properties, own: dict[str, Any]
) -> None:
    data = PropertiesTemplate(constant).encode(**own)
    expected = pamqp_properties(constant)
    for name, value in own.items():
        if name == "headers":
            expected.headers = {**(constant.headers or {}), **value}
        elif value:  # "" keeps the constant
            setattr(expected, name, value)
    theirs = pamqp_read(expected.marshal())
    assert_same_properties(decode_properties(data, 0, len(data)), theirs)
    assert same(pamqp_read(data).headers, theirs.headers)


def test_a_template_without_message_values_is_pamqps_bytes() -> None:
    constant = Properties(content_type="application/json", delivery_mode=2, app_id="svc")
    constant.headers = {"service": "orders", "ce-specversion": "1.0"}
    assert PropertiesTemplate(constant).encode() == pamqp_properties(constant).marshal()


def test_a_message_header_named_like_a_constant_one_wins() -> None:
    template = PropertiesTemplate(Properties(headers={"a": 1, "b": "constant"}))
    data = template.encode(headers={"b": "mine", "c": None})
    assert pamqp_read(data).headers == {"a": 1, "b": "mine", "c": None}


@pytest.mark.parametrize(
    ("props", "words"),
    [
        (Properties(message_id="x" * 256), "message_id is 256 UTF-8 bytes"),
        (Properties(app_id=5), "app_id must be a str"),  # type: ignore[arg-type]
        (Properties(delivery_mode=3), "delivery_mode is 3"),
        (Properties(priority=256), "priority is 256"),
        (Properties(cluster_id="c"), "cluster_id"),
    ],
)
def test_bad_properties_fail_naming_the_property(props: Properties, words: str) -> None:
    with pytest.raises((TypeError, ValueError), match=words):
        encode_properties(props)


def test_truncated_properties_raise_frame_error() -> None:
    data = encode_properties(Properties(message_id="abcdef"))
    with pytest.raises(FrameError, match="past the header frame"):
        decode_properties(data + b"\x00" * 8, 0, len(data) - 2)
