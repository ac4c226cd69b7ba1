"""The events of the shop system (``shop.py``), importable without a broker URL."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, Field


class Currency(StrEnum):
    EUR = "EUR"
    USD = "USD"


class Line(BaseModel):
    sku: str
    quantity: int = Field(ge=1)


class Card(BaseModel):
    kind: Literal["card"] = "card"
    last4: str


class Invoice(BaseModel):
    kind: Literal["invoice"] = "invoice"
    due_days: int


class OrderCreated(BaseModel):
    """An order was placed."""

    id: str = Field(alias="Id")
    amount: int
    currency: Currency = Currency.EUR
    lines: list[Line] = []
    payment: Annotated[Card | Invoice, Field(discriminator="kind")] | None = None
    note: str | None = None


class OrderUpdated(BaseModel):
    id: str
    amount: int


class ChargeRequest(BaseModel):
    order_id: str
    amount: int


class ChargeResponse(BaseModel):
    order_id: str
    accepted: bool
