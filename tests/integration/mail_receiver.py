"""A mail server's far end for the tests: SMTP on a free loopback port that keeps what it is sent
(Python 3.11's ``smtpd``, on its own ``asyncore`` map and thread)."""

from __future__ import annotations

import asyncore
import smtpd
import threading
import time
from typing import Any


class MailReceiver(smtpd.SMTPServer):
    """Accepts every message; ``messages`` holds (sender, recipients, the message as text)."""

    def __init__(self) -> None:
        self._sockets: dict[int, Any] = {}
        super().__init__(("127.0.0.1", 0), None, map=self._sockets, decode_data=True)
        self.port: int = self.socket.getsockname()[1]
        self.messages: list[tuple[str, list[str], str]] = []
        self._running = True
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self._running:
            asyncore.loop(timeout=0.05, map=self._sockets, count=1)
            if not self._sockets:
                time.sleep(0.05)

    def process_message(self, peer: Any, mailfrom: str, rcpttos: list[str], data: str | bytes, **kwargs: Any) -> None:
        self.messages.append((mailfrom, list(rcpttos), data if isinstance(data, str) else data.decode()))

    def stop(self) -> None:
        self._running = False
        self._thread.join(timeout=5)
        for channel in list(self._sockets.values()):
            channel.close()
