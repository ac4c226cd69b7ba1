"""Benchmarks: raw aio-pika, amqp-events and FastStream on the same workloads and broker.

Run ``python -m benchmarks`` from the repository root (``--help`` lists the options).
"""
