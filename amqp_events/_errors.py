"""Every exception amqp-events raises, under one root::

    AmqpEventsError                 catch this to catch everything from amqp-events
    ├── ConfigurationError          wrong setup, found before anything touches the broker:
    │                               bad URL, duplicate route, handler without an event type,
    │                               overlapping routing keys, reserved header, unrouted type
    ├── BrokerConnectionError       the broker cannot be reached, or the connection is gone
    │   └── ReconnectFailed         gave up reconnecting after ``reconnect_timeout``
    ├── BrokerError                 the broker refused an operation (``reply_code``: 406
    │                               PRECONDITION_FAILED, 404 NOT_FOUND, 405 RESOURCE_LOCKED ...)
    ├── PublishError                not published: refused (nacked, too large, bad header),
    │   │                           or the publisher is not attached to a started connection
    │   ├── Unroutable              a mandatory publish reached no queue: nothing was stored
    │   └── PublishOutcomeUnknown   sent, but no confirm came in time (or the connection died
    │                               first): the broker may have it; a resend may duplicate
    ├── DecodeError                 a message body that does not decode into the handler's type
    ├── RequestTimeout              an awaited request got no response in time (also a
    │                               TimeoutError)
    ├── RemoteError                 the responding service's handler raised; ``error_type``
    │                               and the message say what it raised
    └── HandlerControl              raised by a handler on purpose to decide a message's fate:
        ├── Retry                   try again later (counts as an attempt)
        ├── Reject                  straight to the dead-letter queue, with a reason
        ├── Ack                     done: acknowledge now, skip the rest of the handler
        └── Drop                    discard on purpose: acknowledged, not dead-lettered

Each message names the thing at fault and, where there is one, what would fix it.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "Ack",
    "AmqpEventsError",
    "BrokerConnectionError",
    "BrokerError",
    "ConfigurationError",
    "DecodeError",
    "Drop",
    "HandlerControl",
    "PublishError",
    "PublishOutcomeUnknown",
    "ReconnectFailed",
    "Reject",
    "RemoteError",
    "RequestTimeout",
    "Retry",
    "Unroutable",
]


class AmqpEventsError(Exception):
    """Root of every exception raised by amqp-events."""


class ConfigurationError(AmqpEventsError):
    """The setup is wrong: raised at registration or start, before the broker is touched."""


class BrokerConnectionError(AmqpEventsError):
    """The broker cannot be reached, or the connection to it was lost."""


class ReconnectFailed(BrokerConnectionError):
    """The connection was lost and could not be restored within ``reconnect_timeout``."""


class BrokerError(AmqpEventsError):
    """The broker refused an operation; ``reply_code`` is the AMQP code (406, 404, 405 ...)."""

    PRECONDITION_FAILED = 406
    NOT_FOUND = 404
    RESOURCE_LOCKED = 405
    ACCESS_REFUSED = 403

    def __init__(self, reply_code: int, message: str) -> None:
        super().__init__(f"{reply_code}: {message}")
        self.reply_code = reply_code


class ConsumerLost(AmqpEventsError):
    """The broker cancelled a consumer (its queue was deleted) and it could not be restored:
    declaring the queue again was refused, attempt after attempt. The connection fails with it
    (``run()`` raises it, close listeners hear it). ``queue`` names the queue, ``reply_code`` is
    the broker's AMQP code for the last refusal (406: declared by someone else with other
    arguments, 403: access refused ...), or None."""

    def __init__(self, queue: str, message: str, *, reply_code: int | None = None) -> None:
        super().__init__(message)
        self.queue = queue
        self.reply_code = reply_code


class PublishError(AmqpEventsError):
    """A message was not published: refused by the broker, too large, or not sent.

    From ``publish_many``, ``failures`` lists each event that was not confirmed with its error.
    ``reply_code`` is the broker's AMQP code when it refused the publish (404: no such
    exchange, 406: too large ...), else None.
    """

    def __init__(
        self,
        message: str,
        *,
        failures: list[tuple[Any, BaseException]] | None = None,
        reply_code: int | None = None,
    ):
        super().__init__(message)
        self.failures = failures or []
        self.reply_code = reply_code


class Unroutable(PublishError):
    """A mandatory publish matched no queue, so the broker returned it: nothing was stored.

    Raised for ``publish(..., mandatory=True)``, for ``queue_publisher`` publishers and for
    requests to a service that has no request queue. Resending is safe once a queue is bound.
    """


class PublishOutcomeUnknown(PublishError):
    """The message was sent but its confirm did not come in time, or the connection died first.

    The broker may have stored it or not: unlike a plain ``PublishError`` (refused, or never
    sent), resending may deliver it twice. At-least-once consumers (or an inbox keyed on the
    message id) absorb such duplicates.
    """


class DecodeError(AmqpEventsError):
    """A message body could not be decoded into the event type its handler expects."""


class RequestTimeout(AmqpEventsError, TimeoutError):
    """An awaited request got no response within its timeout."""


class RemoteError(AmqpEventsError):
    """The responding service's handler raised; ``error_type`` names what it raised."""

    def __init__(self, service: str, error_type: str, message: str) -> None:
        super().__init__(f"{service} failed: {error_type}: {message}")
        self.service = service
        self.error_type = error_type
        self.message = message


class HandlerControl(AmqpEventsError):
    """Base of the exceptions a handler raises on purpose to decide what happens to a message."""


class Retry(HandlerControl):
    """Handle the message again later: after ``delay`` seconds (rounded up to one of the retry
    policy's delays), else after the policy's next delay. Counts as an attempt."""

    def __init__(self, delay: float | None = None, reason: str = "") -> None:
        if delay is not None and (
            not isinstance(delay, int | float)
            or isinstance(delay, bool)
            or not 0 <= delay < math.inf
        ):
            # Raised from the handler instead of the Retry: a failure like any other.
            raise ConfigurationError(
                f"Retry(delay={delay!r}): the delay must be a number of seconds >= 0, or None "
                "for the retry policy's next delay"
            )
        super().__init__(reason or "retry requested")
        self.delay = delay
        self.reason = reason


class Reject(HandlerControl):
    """Send the message straight to the dead-letter queue, with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Ack(HandlerControl):
    """Stop handling: the message is acknowledged as handled."""


class Drop(HandlerControl):
    """Discard the message on purpose: acknowledged, logged at debug, not dead-lettered."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason or "dropped")
        self.reason = reason
