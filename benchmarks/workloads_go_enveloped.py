"""The Go reference client sending amqp-events' envelope: the same messages on the wire.

``go-amqp091`` publishes the bare order, as a goamqp service does; amqp-events adds the
envelope to each event (docs/envelope.md: a message id, a timestamp, goamqp's ``service``
header and seven CloudEvents headers), which the broker decodes and stores with the message.
This client is ``go-amqp091`` with ``-envelope``: it adds the same properties and headers, so
the two Python-vs-Go comparisons separate what the client costs from what the envelope costs
the broker. Its consume workload reads the queue the harness filled, as ``go-amqp091`` does.
"""

from __future__ import annotations

from .workloads_go import client, unavailable

__all__ = ["CLIENT", "NAME", "unavailable"]

NAME = "go-enveloped"
CLIENT = client(NAME, enveloped=True)
