"""Benchmarks: raw aio-pika, amqp-events, FastStream and Go (amqp091-go) on one broker.

Run ``python -m benchmarks`` from the repository root (``--help`` lists the options).
"""
