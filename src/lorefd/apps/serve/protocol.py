"""uvicorn's HTTP/1.1 protocol with a deadline on each request's headers.

uvicorn reads request headers without a time limit: a client trickling header lines (a
slow-loris) holds its connection until h11's 16 KB header limit, then gets a 400. The body has
its own limits (:func:`lorefd.apps.serve.uploads.receive_files`: 408 when it stalls or
trickles); this protocol gives the headers the same answer: a request whose headers are not
complete ``header_timeout`` seconds after its connection opened (or after the previous
response on a kept-alive connection) gets 408 and the connection is closed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderDeadlineProtocol(H11Protocol):
    """:class:`H11Protocol` that answers 408 to headers slower than :attr:`header_timeout`."""

    header_timeout = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        deadline = getattr(self, "_deadline", None)
        if deadline is not None:
            deadline.cancel()
            self._deadline = None

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request's headers arrived: the app takes over
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _headers_too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is in (its body has the app's own limits)
        body = json.dumps({"detail": f"request headers too slow (not complete after "
                                     f"{self.header_timeout:g} s)"}).encode()
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json"
                             b"\r\nconnection: close\r\ncontent-length: %d\r\n\r\n" % len(body)
                             + body)
        self.transport.close()


def header_deadline(seconds: float) -> type[Any]:
    """The protocol class for ``uvicorn.run(http=...)`` with a ``seconds`` header deadline."""
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,),
                {"header_timeout": float(seconds)})


__all__ = ["HeaderDeadlineProtocol", "header_deadline"]
