"""``assert_compatible``: what it accepts really reads both ways; what it refuses it names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field

from amqp_events.testing import assert_compatible


class Line(BaseModel):
    sku: str
    quantity: int


class LineRetyped(BaseModel):
    sku: str
    quantity: str


class OrderV1(BaseModel):
    id: str
    total: int
    lines: list[Line] = []
    note: str | None = None


class OrderV2(BaseModel):
    """Compatible: one optional field more, one optional field less."""

    id: str
    total: int
    lines: list[Line] = []
    coupon: str | None = None


class OrderAddsRequired(BaseModel):
    id: str
    total: int
    currency: str


class OrderDropsRequired(BaseModel):
    id: str


class OrderRetypes(BaseModel):
    id: str
    total: float


class OrderRetypesNested(BaseModel):
    id: str
    total: int
    lines: list[LineRetyped] = []


class OrderMakesOptional(BaseModel):
    id: str
    total: int = 0


class OrderMakesNullable(BaseModel):
    id: str
    total: int | None


class OrderForbidsExtra(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    total: int
    lines: list[Line] = []


class OrderAliased(BaseModel):
    order_id: str = Field(alias="id")
    total: int


orders_v1 = st.builds(
    OrderV1,
    id=st.text(max_size=8),
    total=st.integers(),
    lines=st.lists(st.builds(Line, sku=st.text(max_size=4), quantity=st.integers()), max_size=3),
    note=st.none() | st.text(max_size=8),
)
orders_v2 = st.builds(
    OrderV2,
    id=st.text(max_size=8),
    total=st.integers(),
    lines=st.lists(st.builds(Line, sku=st.text(max_size=4), quantity=st.integers()), max_size=3),
    coupon=st.none() | st.text(max_size=8),
)


def test_a_compatible_change_passes() -> None:
    assert_compatible(OrderV1, OrderV2)
    assert_compatible(OrderV1, OrderV1)
    assert_compatible(OrderV1, OrderAliased)  # wire names are what count


@given(orders_v1)
def test_what_passes_reads_old_messages(old: OrderV1) -> None:
    new = OrderV2.model_validate_json(old.model_dump_json())
    assert (new.id, new.total, new.lines) == (old.id, old.total, old.lines)


@given(orders_v2)
def test_what_passes_writes_messages_old_consumers_read(new: OrderV2) -> None:
    old = OrderV1.model_validate_json(new.model_dump_json())
    assert (old.id, old.total, old.lines) == (new.id, new.total, new.lines)


@pytest.mark.parametrize(
    ("new", "problem"),
    [
        (OrderAddsRequired, "'currency' is required in OrderAddsRequired but OrderV1 has no"),
        (OrderDropsRequired, "'total' is required in OrderV1 and gone from OrderDropsRequired"),
        (OrderRetypes, "'total' changed type: integer in OrderV1, number in OrderRetypes"),
        (OrderRetypesNested, "'lines' changed type"),
        (OrderMakesOptional, "'total' is required in OrderV1 but optional in OrderMakesOptional"),
        (OrderMakesNullable, "'total' changed type: integer in OrderV1, integer | null in"),
        (OrderForbidsExtra, "'note' is gone from OrderForbidsExtra, which forbids extra"),
    ],
)
def test_a_breaking_change_is_named(new: type[BaseModel], problem: str) -> None:
    with pytest.raises(AssertionError) as raised:
        assert_compatible(OrderV1, new)
    assert problem in str(raised.value)
    assert str(raised.value).startswith(f"{new.__name__} is not compatible with OrderV1:")


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(AssertionError) as raised:
        assert_compatible(OrderAddsRequired, OrderDropsRequired)
    assert str(raised.value).count("\n- ") == 2  # total and currency both gone
