"""Connecting to a vhost that does not exist says so, against a real broker."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from amqp_events import BrokerConnectionError, Connection


async def test_missing_vhost_is_named_with_how_to_create_it(
    amqp_events_rabbitmq_vhost_url: str,
) -> None:
    vhost = f"amqp-events-missing-{uuid.uuid4().hex[:12]}"
    url = urlunsplit(urlsplit(amqp_events_rabbitmq_vhost_url)._replace(path=f"/{vhost}"))
    connection = Connection("orders", url, connect_timeout=10)
    with pytest.raises(BrokerConnectionError) as refused:
        await connection.start()
    message = str(refused.value)
    assert f"virtual host {vhost!r} does not exist" in message
    assert f"rabbitmqctl add_vhost {vhost}" in message
    assert "InvalidFrameError" not in message
    password = urlsplit(url).password
    if password:
        assert f":{password}@" not in message  # the URL is shown redacted
        assert ":***@" in message
