from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field

from amqp_events import DecodeError
from amqp_events._codec import decoder_for, encode


class Order(BaseModel):
    id: str
    amount: int
    tags: list[str] = []


class GoOrder(BaseModel):
    """A model for events from Go: goamqp writes field names as declared ("Id")."""

    model_config = ConfigDict(populate_by_name=True)
    id: str = Field(alias="Id")
    amount: int = Field(alias="Amount")


@given(st.text(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.lists(st.text()))
def test_roundtrip(order_id: str, amount: int, tags: list[str]) -> None:
    order = Order(id=order_id, amount=amount, tags=tags)
    assert decoder_for(Order)(encode(order)) == order


def test_go_style_body_decodes_through_aliases() -> None:
    decoded = decoder_for(GoOrder)(b'{"Id": "1", "Amount": 5, "Unknown": true}')
    assert decoded == GoOrder(id="1", amount=5)
    # and we write the same names back, which Go reads case-insensitively anyway
    assert json.loads(encode(decoded)) == {"Id": "1", "Amount": 5}


def test_unknown_fields_are_ignored() -> None:
    assert decoder_for(Order)(b'{"id": "1", "amount": 2, "added_later": 1}').id == "1"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "does not decode into Order"),
        (b'{"id": "1"}', "amount: Field required"),
        (b'{"id": "1", "amount": "many"}', "amount"),
    ],
)
def test_decode_errors_name_the_type_and_field(body: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decoder_for(Order)(body)


def test_dict_decoder() -> None:
    assert decoder_for(dict)(b'{"a": 1}') == {"a": 1}
    with pytest.raises(DecodeError, match="not an object"):
        decoder_for(dict)(b"[1]")
    with pytest.raises(DecodeError, match="not JSON"):
        decoder_for(dict)(b"\xff")
