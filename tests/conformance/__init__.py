"""Watermill's universal Pub/Sub suite (``pubsub/tests/test_pubsub.go``), ported to amqp-events.

Each test names the Watermill case it ports in its docstring. A Watermill topic is a routing
key, a subscriber a ``Connection`` consuming it, a consumer group a service (one durable queue
shared by the service's connections), ``Nack()`` a handler that raises. Every case runs on the
in-memory broker and on RabbitMQ; the RabbitMQ cases that cut every connection are marked
``disruptive``.

Ported (test_pubsub.py unless noted):

- TestPublishSubscribe -> test_publish_subscribe
- TestConcurrentSubscribe -> test_concurrent_subscribe
- TestConsumerGroups -> test_consumer_groups
- TestResendOnError -> test_resend_on_error
- TestNoAck -> test_no_ack, test_no_ack_redelivered_after_subscriber_closes, and
  test_reconnect.py::test_no_ack_redelivered_after_connection_killed
- TestContinueAfterSubscribeClose -> test_continue_after_subscribe_close
- TestConcurrentClose -> test_concurrent_close
- TestContinueAfterErrors -> test_continue_after_errors, adapted: a nacked Watermill message
  comes back forever, a failing handler here is retried a bounded number of times and then
  dead-lettered, so the test checks that failing messages do not stop the others
- TestPublishSubscribeInOrder -> test_publish_subscribe_in_order (one consumer, prefetch 1)
- TestPublisherClose -> test_publisher_close, test_publisher_close_while_publishing
- TestTopic -> test_topic
- TestNewSubscriberReceivesOldMessages -> test_new_subscriber_receives_only_new_messages, for
  the opposite feature, which RabbitMQ has: a transient consumer gets only what is published
  after it subscribed; a service's durable queue keeps what came while the service was away
- TestReconnect -> test_reconnect.py::test_reconnect (connections cut with
  ``close_all_connections`` instead of a broker restart; restarts are covered by
  tests/rabbitmq/test_recovery.py)

Left out:

- TestMessageCtx: a Go ``context`` per message, cancelled on ack. Handlers here get no context
  object, so there is nothing to check.
- TestSubscribeCtx: subscribing with a cancellable context whose values reach the messages.
  There is no per-subscription context; the only way to stop a subscriber is
  ``Connection.close()``, which test_continue_after_subscribe_close and
  test_no_ack_redelivered_after_subscriber_closes cover.
- TestPubSubStressTest: the whole suite 20 times in parallel. Not ported as such; the one
  narrow race found (closing while publishing) is repeated 100 times in its test.
- The ExactlyOnceDelivery variants: RabbitMQ is at-least-once. The tests expect each message
  once where nothing fails, and allow duplicates where a connection is cut.
"""
