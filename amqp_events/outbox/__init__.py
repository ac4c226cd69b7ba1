"""Exactly-once effects on SQLAlchemy 2 (async), PostgreSQL or SQLite: a transactional outbox
and an idempotent inbox. Needs ``pip install 'amqp-events[outbox]'``.

- ``Outbox(engine)``: ``await outbox.publish(session, publisher, event)`` writes the event in
  the caller's transaction (``_outbox``); the ``outbox_relay(outbox)`` setup publishes
  committed rows with confirms and marks them sent (``_relay``: its loop; ``_relay_pass``: one
  pass over the table; ``_relay_publish``: the rows as publishes);
- ``Inbox(engine)``: ``@inbox.idempotent`` handlers run once per message id and consumer,
  their writes and the inbox record in one transaction (``_inbox``);
- ``_tables`` defines both tables; ``_database`` is what differs between PostgreSQL and SQLite.

See docs/outbox.md for why each guarantee holds and what it does not cover.
"""

from ._inbox import Inbox, inbox_cleanup
from ._outbox import BlockedPartition, Outbox
from ._relay import outbox_relay

__all__ = ["BlockedPartition", "Inbox", "Outbox", "inbox_cleanup", "outbox_relay"]
