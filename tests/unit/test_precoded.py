"""Headers encoded from a constant part kept encoded and a per-message part decode, in any
client, to exactly the merged headers pamqp would have sent."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands as spec

from amqp_events._envelope import Envelope
from amqp_events._transport._precoded import PrecodedHeaders, precoded_headers
from amqp_events._transport._wire import amqp_properties

names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=20)
values = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.none(),
    st.lists(st.text(max_size=5), max_size=3),
)
tables = st.dictionaries(names, values, max_size=8)


def decoded(properties: spec.Basic.Properties) -> spec.Basic.Properties:
    data = properties.marshal()
    back = spec.Basic.Properties()
    back.unmarshal(struct.unpack(">H", data[:2])[0], data[2:])
    return back


@given(tables, tables)
def test_precoded_headers_decode_to_the_merged_table(
    constant: dict[str, Any], extra: dict[str, Any]
) -> None:
    envelope = Envelope("id-1", datetime(2026, 11, 28, 10, tzinfo=UTC), extra)
    for _ in range(2):  # the second time from the cache
        sent = amqp_properties(constant, None, envelope)
        back = decoded(sent)
        assert back.headers == {**constant, **extra}
        assert back.message_id == "id-1"
        # Shared names fall back to pamqp's own encoding of the merged table.
        shared = set(constant) & set(extra)
        assert (type(sent.headers) is PrecodedHeaders) == (not shared)


def test_a_changed_dict_at_a_reused_address_is_encoded_anew() -> None:
    first = {"service": "a"}
    assert decoded(amqp_properties(first, None, Envelope("i", datetime.now(UTC), {}))).headers == (
        first
    )
    del first
    for n in range(50):  # new dicts, some at the old address: each encodes its own entries
        headers = {"service": f"s{n}"}
        merged = precoded_headers(headers, {"x": n})
        assert merged == {"service": f"s{n}", "x": n}
        assert (
            decoded(
                amqp_properties(headers, None, Envelope("i", datetime.now(UTC), {"x": n}))
            ).headers
            == merged
        )
