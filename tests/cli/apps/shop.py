"""A small system: order-service publishes, shipping and stat consume, billing answers requests.

Every connection takes its URL from ``AMQP_URL`` (as a deployed service would), so loading this
module needs no broker for ``topology`` and ``asyncapi``.
"""

from __future__ import annotations

from amqp_events import (
    Connection,
    EventRouter,
    Headers,
    Publisher,
    Route,
    event_stream_consumer,
    event_stream_publisher,
    service_publisher,
    service_request_consumer,
    with_type_mapping,
)

from .models import ChargeRequest, ChargeResponse, OrderCreated, OrderUpdated

ORDER_ROUTES = (Route(OrderCreated, "Order.Created"), Route(OrderUpdated, "Order.Updated"))

orders = Connection("order-service")
orders.use(event_stream_publisher(Publisher(*ORDER_ROUTES)))
orders.use(service_publisher("billing-service", Publisher(Route(ChargeRequest, "Charge"))))

shipping = Connection("shipping-service")


@shipping.event_stream_consumer("Order.*")
async def handle_order_event(event: OrderCreated | OrderUpdated, headers: Headers) -> None:
    pass


shipping.use(with_type_mapping(*ORDER_ROUTES))


async def on_created(event: OrderCreated) -> None:
    pass


def make_stat() -> Connection:
    """A factory, as uvicorn's --factory and FastStream take."""
    conn = Connection("stat-service")
    conn.use(event_stream_consumer("Order.Created", on_created))
    return conn


billing_router = EventRouter()


@billing_router.service_request_consumer("Charge")
async def charge(request: ChargeRequest) -> ChargeResponse:
    return ChargeResponse(order_id=request.order_id, accepted=True)


async def make_billing() -> Connection:
    """An async factory."""
    conn = Connection("billing-service")
    conn.include(billing_router)
    conn.use(service_request_consumer("Refund", on_refund))
    return conn


async def on_refund(event: dict[str, object]) -> None:
    pass


NOT_A_CONNECTION = 42


def make_nothing() -> int:
    return 0
