"""One client request as every layer below its handler sees it.

Three layers each know one thing about a request that the others need:

- the handler learns that the client hung up (Tornado tells it, nobody else);
- the service knows whether the answer is still wanted without that client (another identical request waits
  for it, or the cache will keep it for the next one);
- the client may have said that hanging up means stop (`X-Keyloom-Cancel: on-close`: SillyTavern's Stop, the
  chat page).

Before, these travelled as a future created by one layer and resolved in another, a lambda the handler wrote
into the service's plan, and a handler method that reached into the reuse service. Now the handler makes one
`RequestContext`, hands it down, and each layer reads or sets its own field: the handler calls `hang_up()`,
the service says `keep_on_hang_up(still_wanted)`, and the context decides whether the work is cancelled.

The cancel scope is the task (or future) whose cancellation stops the work and closes its upstream call;
`run()` makes the handler's own task the scope and turns its cancellation back into `ClientGone`.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .dispatch import Trace

T = TypeVar("T")


class ClientGone(Exception):
    """The client hung up: there is nobody to write to."""


class RequestContext:
    __slots__ = ("trace", "cancel_on_close", "client_gone", "scope", "_still_wanted")

    def __init__(self, trace: Trace | None = None, *, cancel_on_close: bool = False):
        self.trace = trace if trace is not None else Trace()  # what happened, for the request log
        self.cancel_on_close = cancel_on_close  # the client said hanging up means stop
        self.client_gone = False
        self.scope: asyncio.Future[Any] | None = None  # what hanging up cancels
        self._still_wanted: Callable[[], bool] | None = None

    def keep_on_hang_up(self, still_wanted: Callable[[], bool]) -> None:
        """The service's say: while `still_wanted()` is true, the work goes on when the client hangs up (its
        answer is kept for someone else). The client's own `cancel_on_close` wins."""
        self._still_wanted = still_wanted

    def keeps_running(self) -> bool:
        return not self.cancel_on_close and self._still_wanted is not None and self._still_wanted()

    def hang_up(self) -> None:
        """The client went away: cancel the work unless its answer is still wanted."""
        self.client_gone = True
        scope = self.scope
        if scope is not None and not scope.done() and not self.keeps_running():
            scope.cancel()

    async def run(self, aw: Awaitable[T]) -> T:
        """Await `aw` with the current task as the cancel scope.

        Tornado already runs each request in a task of its own: that task is what gets cancelled, and the
        cancellation is turned back into ClientGone here, so no second task is needed."""
        task = asyncio.current_task()
        self.scope = task
        try:
            return await aw
        except asyncio.CancelledError:
            if self.client_gone and task is not None:
                task.uncancel()
                raise ClientGone() from None
            raise
        finally:
            self.scope = None
