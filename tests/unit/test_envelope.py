"""The envelope's parts that need no broker: ids, reading CloudEvents attributes under every
prefix, metadata of foreign messages, the log filter, and what the envelope adds to a frame."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amqp_events import ConfigurationError, MessageContextFilter, Metadata
from amqp_events._envelope import (
    ENVELOPE_MAX_BYTES,
    MAX_ID_CHARS,
    Envelope,
    Handling,
    handling,
    new_message_id,
    outgoing_envelope,
)
from amqp_events._headers import check_user_headers
from amqp_events._metadata import metadata_of, schema_version_of
from amqp_events._naming import CE_CAUSATION_ID, CE_CORRELATION_ID, CE_ID, CE_TIME
from amqp_events._transport._base import Delivery
from amqp_events._transport._wire import header_frame_size


def delivery(headers: dict[str, Any], message_id: str | None = None) -> Delivery:
    return Delivery(
        b"{}", "Order.Created", "events.topic.exchange", headers, False, None, message_id
    )


def test_message_ids_are_version_4_uuids_and_differ() -> None:
    ids = [new_message_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:200]:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


def test_a_root_event_starts_its_conversation() -> None:
    envelope = outgoing_envelope()
    assert envelope.headers[CE_ID] == envelope.headers[CE_CORRELATION_ID] == envelope.message_id
    assert CE_CAUSATION_ID not in envelope.headers
    assert envelope.timestamp.tzinfo is UTC
    assert envelope.timestamp.microsecond == 0
    stamp = envelope.headers[CE_TIME]
    assert datetime.fromisoformat(stamp) == envelope.timestamp
    assert abs(envelope.timestamp.timestamp() - datetime.now(UTC).timestamp()) < 2


def test_an_event_published_while_handling_carries_the_conversation_on() -> None:
    handled = delivery({"cloudEvents:correlationid": "conv-1"}, message_id="m-1")
    token = handling.set(Handling(handled))
    try:
        first, second = outgoing_envelope(), outgoing_envelope()
    finally:
        handling.reset(token)
    for envelope in (first, second):
        assert envelope.headers[CE_CORRELATION_ID] == "conv-1"
        assert envelope.headers[CE_CAUSATION_ID] == "m-1"
    assert first.message_id != second.message_id


def test_handling_a_goamqp_message_starts_one_conversation_for_all_it_publishes() -> None:
    token = handling.set(Handling(delivery({"service": "go-orders"})))
    try:
        first, second = outgoing_envelope(), outgoing_envelope()
    finally:
        handling.reset(token)
    assert first.headers[CE_CORRELATION_ID] == second.headers[CE_CORRELATION_ID]
    assert first.headers[CE_CORRELATION_ID] != first.message_id
    assert CE_CAUSATION_ID not in first.headers  # the goamqp message had no id to name


def test_a_goamqp_message_has_no_invented_metadata() -> None:
    metadata = metadata_of(delivery({"service": "go-orders"}), "Order.Created", 1, False)
    assert metadata == Metadata(
        message_id=None,
        correlation_id=None,
        causation_id=None,
        source="go-orders",
        time=None,
        type="Order.Created",
        version=1,
        attempt=1,
        redelivered=False,
    )


@pytest.mark.parametrize("prefix", ["cloudEvents:", "cloudEvents_", "ce-"])
def test_cloudevents_attributes_are_read_under_every_prefix(prefix: str) -> None:
    headers = {
        f"{prefix}id": "ce-id-1",
        f"{prefix}source": "gomessaging-svc",
        f"{prefix}time": "2026-11-28T10:00:00Z",
        f"{prefix}correlationid": "c-1",
        f"{prefix}causationid": "m-0",
        f"{prefix}schemaversion": "3",
    }
    metadata = metadata_of(delivery(headers), "Order.Created", 2, True)
    assert metadata.message_id == "ce-id-1"  # gomessaging sends no AMQP message_id
    assert metadata.source == "gomessaging-svc"
    assert metadata.time == datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    assert (metadata.correlation_id, metadata.causation_id) == ("c-1", "m-0")
    assert (metadata.version, metadata.attempt, metadata.redelivered) == (3, 2, True)


@given(st.one_of(st.none(), st.integers(), st.text(max_size=12), st.floats(), st.booleans()))
def test_a_schema_version_is_a_positive_whole_number_or_nothing(value: object) -> None:
    version = schema_version_of({"cloudEvents:schemaversion": value})
    if version is not None:
        assert version >= 1
        assert version == (int(value) if isinstance(value, str) else value)
    elif type(value) is int and 1 <= value <= 1_000_000:
        raise AssertionError(f"{value!r} is a version")


header_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=40),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.binary(max_size=8),
)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                f"{p}{a}"
                for p in ("cloudEvents:", "cloudEvents_", "ce-")
                for a in ("id", "source", "time", "correlationid", "causationid", "schemaversion")
            ]
            + ["service"]
        ),
        header_values,
    ),
    st.one_of(st.none(), st.datetimes(), st.datetimes(timezones=st.timezones())),
)
def test_metadata_of_any_headers_never_raises(headers: dict[str, Any], stamp: Any) -> None:
    foreign = Delivery(b"{}", "k", "x", headers, False, timestamp=stamp)
    metadata = metadata_of(foreign, "k", 1, False)
    assert metadata.time is None or metadata.time.tzinfo is not None
    assert metadata.version >= 1


def test_overlong_or_foreign_ids_are_not_carried_on() -> None:
    headers = {"cloudEvents:correlationid": "x" * (MAX_ID_CHARS + 1)}
    assert metadata_of(delivery(headers, message_id=""), "k", 1, False).correlation_id is None
    assert metadata_of(delivery({"ce-correlationid": 42}), "k", 1, False).correlation_id is None


@pytest.mark.parametrize(
    "name",
    ["cloudEvents:id", "cloudEvents_time", "ce-correlationid", "cloudEvents:schemaversion"],
)
def test_users_cannot_set_the_envelope(name: str) -> None:
    with pytest.raises(ConfigurationError, match="part of the envelope amqp-events writes"):
        check_user_headers({name: "mine"})
    check_user_headers({"cloudEvents:subject": "order/42"})  # other attributes are fine


def test_the_envelope_adds_at_most_its_bound_to_a_header_frame() -> None:
    longest = "x" * MAX_ID_CHARS
    envelope = Envelope(
        longest,
        datetime.now(UTC).replace(microsecond=0),
        {
            CE_ID: longest,
            CE_TIME: "2026-11-28T10:00:00Z",
            CE_CORRELATION_ID: longest,
            CE_CAUSATION_ID: longest,
        },
    )
    headers = {"service": "s", "cloudEvents:type": "Order.Created"}
    grown = header_frame_size(headers, None, envelope) - header_frame_size(headers, None)
    assert 0 < grown <= ENVELOPE_MAX_BYTES


def test_the_log_filter_names_the_handled_message(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("tests.envelope")
    log.addFilter(MessageContextFilter())
    caplog.set_level(logging.INFO, logger="tests.envelope")
    log.info("outside")
    token = handling.set(Handling(delivery({"cloudEvents:correlationid": "c-9"}, "m-9")))
    try:
        log.info("inside")
    finally:
        handling.reset(token)
    outside, inside = caplog.records
    assert (outside.message_id, outside.correlation_id) == ("-", "-")  # type: ignore[attr-defined]
    assert (inside.message_id, inside.correlation_id) == ("m-9", "c-9")  # type: ignore[attr-defined]
