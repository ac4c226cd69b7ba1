"""A publish already written to the broker, awaited as the future of its confirm.

``Publisher.publish`` hands an event to the open session at once when it can, and returns this
future instead of a coroutine. ``asyncio.gather`` takes a future as it is, so a thousand
publishes gathered cost a thousand futures, not a thousand tasks, each with its context, its
callbacks and its coroutine (measured: about 40% of the publish path's CPU, half the objects
the cyclic GC traverses per publish in flight). It is also a coroutine (``send``, ``throw``,
``close``), so ``asyncio.create_task``, ``TaskGroup.create_task`` and ``asyncio.run`` take it
as they take the coroutine it stands for.

When the session fails it (a nack, a return, a timeout, the connection's end), the failure
takes ``publish``'s path from there in a task of its own (the transport's ``publish_failed``:
mapped to ``PublishError``, or published again once the connection is back) and that task
settles it. A cancelled one stops waiting, as a cancelled coroutine would; its message was
written already, as it would have been by then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from ._errors import Unroutable

if TYPE_CHECKING:
    from ._envelope import Envelope
    from ._publisher import Destination
    from ._transport._base import Session, Transport

__all__ = ["PendingPublish"]


class PendingPublish(asyncio.Future[None], Coroutine[Any, Any, None]):
    """The confirm of one publish written to ``session``; what ``publish`` returns then."""

    # What a failure needs to take publish()'s path from there: kept in slots, not in one
    # more object per publish in flight.
    __slots__ = (
        "_body",
        "_destination",
        "_envelope",
        "_headers",
        "_mandatory",
        "_recovery",
        "_routing_key",
        "_session",
        "_started",
        "_transport",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        transport: Transport,
        session: Session,
        destination: Destination,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        mandatory: bool,
        envelope: Envelope,
    ) -> None:
        super().__init__(loop=loop)
        self._transport = transport
        self._session = session
        self._destination = destination
        self._routing_key = routing_key
        self._body = body
        self._headers = headers
        self._mandatory = mandatory
        self._envelope = envelope
        self._started = loop.time()
        self._recovery: asyncio.Task[None] | None = None

    # -- settled by the session --------------------------------------------------------------

    def set_exception(self, exception: type | BaseException) -> None:
        """The session failed this publish: what ``publish`` does then, in a task."""
        if self.done() or self._recovery is not None:
            return
        failed = exception if isinstance(exception, Exception) else RuntimeError(exception)
        self._recovery = self.get_loop().create_task(self._recover(failed))

    async def _recover(self, failed: Exception) -> None:
        try:
            await self._transport.publish_failed(
                self._session,
                failed,
                self._started,
                self._destination.exchange,
                self._routing_key,
                self._body,
                self._headers,
                mandatory=self._mandatory,
                envelope=self._envelope,
            )
        except asyncio.CancelledError:
            if not self.done():
                super().cancel()
            raise
        except Unroutable as exc:
            self._settle(self._destination.unroutable(self._routing_key, exc))
        except Exception as exc:
            self._settle(exc)
        else:
            if not self.done():
                self.set_result(None)

    def _settle(self, exc: Exception) -> None:
        if not self.done():
            super().set_exception(exc)

    def cancel(self, msg: Any | None = None) -> bool:
        if self._recovery is not None:
            self._recovery.cancel(msg)  # stop publishing again: nobody waits for it
        return super().cancel(msg)

    # -- the coroutine it stands for ---------------------------------------------------------

    def send(self, value: None) -> Any:
        """As ``await self``, step by step: a task drives it like the coroutine."""
        if not self.done():
            self._asyncio_future_blocking = True
            return self
        raise StopIteration(self.result())

    def throw(self, typ: Any, val: BaseException | object = None, tb: Any = None) -> NoReturn:
        exc = val if isinstance(val, BaseException) else typ() if isinstance(typ, type) else typ
        if isinstance(exc, asyncio.CancelledError):
            self.cancel()
        raise exc

    def close(self) -> None:
        """Nothing to unwind: the message was written when the publish was made."""

    def __await__(self) -> Generator[Any, None, None]:
        return super().__await__()
