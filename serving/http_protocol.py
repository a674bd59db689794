"""uvicorn's HTTP protocol with the two guards it lacks: a deadline on a request's head, and a hard
cap on open connections.

    connection made ──► head timer armed (head_timeout_s) ──► headers complete: disarmed
          │                       │ fires first: "408 Request Timeout", connection closed
          └── more than max_connections open: closed at once

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``, but a connection that
sends nothing, or half a request line, or headers without their end, stays open for ever: enough
of them exhaust the process's file descriptors (a slow-loris attack). The body has its own
deadline in the app (:class:`serving.app.ApiLimits` ``body_timeout_s``). ``limit_concurrency``
(uvicorn's own option, which ``tidemark serve`` sets to the same ``max_connections``) answers 503
to requests past the limit; the cap here closes the connections past it, so that even clients
that never send a request can't hold more.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["GuardedHttpToolsProtocol", "guarded_protocol"]

_TIMEOUT_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: 41\r\nconnection: close\r\n\r\nthe request head did not arrive in time\r\n")
#: Connections past ``max_connections`` that are still accepted, so that uvicorn can answer their
#: requests with its 503 ("come back later") rather than a reset.
_HEADROOM = 64


class _GuardedProtocol(HttpToolsProtocol):
    head_timeout_s: float = 5.0
    max_connections: int = 512

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        if len(self.connections) > self.max_connections + _HEADROOM:
            transport.close()  # beyond what limit_concurrency answers with a 503: refuse outright
            return
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.write(_TIMEOUT_408)
            self.transport.close()



class GuardedHttpToolsProtocol(_GuardedProtocol):
    """The protocol of ``tidemark serve --workers N``'s worker processes, which uvicorn names by
    import string (``serving.http_protocol:GuardedHttpToolsProtocol``: a spawned worker can't be
    handed a class made at run time); each worker sets its limits with :meth:`limit` at start."""

    @classmethod
    def limit(cls, *, head_timeout_s: float, max_connections: int) -> None:
        """This process's limits (per worker: ``max_connections`` counts one worker's connections)."""
        _check_limits(head_timeout_s, max_connections)
        cls.head_timeout_s, cls.max_connections = head_timeout_s, max_connections


def guarded_protocol(*, head_timeout_s: float, max_connections: int) -> type[Any]:
    """A protocol class for ``uvicorn.run(http=...)`` with these limits."""
    _check_limits(head_timeout_s, max_connections)
    return type("GuardedHttpToolsProtocol", (_GuardedProtocol,),
                {"head_timeout_s": head_timeout_s, "max_connections": max_connections})


def _check_limits(head_timeout_s: float, max_connections: int) -> None:
    if not head_timeout_s > 0 or max_connections < 1:
        raise ValueError(f"head_timeout_s ({head_timeout_s}) and max_connections ({max_connections}) must be positive")
