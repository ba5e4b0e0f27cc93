"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, recording messages, failing on request.

    recorder.refuse("ana@example.org", "550 5.1.1 no such mailbox")     # every attempt
    recorder.plan("bo@example.org", "451 4.7.1 try later", DROP_AFTER_DATA)  # one per attempt

A planned fault is used up by one attempt (one RCPT for that address); once the plan is empty
the address is accepted. Faults: a reply string (given at RCPT), DROP_BEFORE_DATA (the server
hangs up at RCPT), DROP_AFTER_DATA (it keeps the message, then hangs up instead of answering the
data) and SlowData(seconds) (it keeps the message and answers late).

aiosmtpd offers SMTPUTF8 (RFC 6531) unless told not to: `running(recorder, enable_SMTPUTF8=False)`
is a relay that takes ASCII addresses only. Each Received keeps its MAIL FROM parameters.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from processes import signal_when


@dataclass(frozen=True, slots=True)
class SlowData:
    """Keep the message, then wait this long before answering 250."""

    seconds: float


DROP_BEFORE_DATA = "drop before data"
DROP_AFTER_DATA = "drop after data"
Fault = str | SlowData


@dataclass(frozen=True, slots=True)
class Received:
    """One message the server accepted (or kept before a fault after the data)."""

    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    at: float  # time.monotonic() when the data arrived
    mail_options: tuple[str, ...] = ()  # MAIL FROM's parameters, e.g. ("SMTPUTF8",)


class SmtpRecorder:
    """An aiosmtpd handler with a per-address fault plan; with `pipelining` it offers
    PIPELINING (RFC 2920), which aiosmtpd serves (it answers commands in order) but does not
    announce."""

    def __init__(self, *, pipelining: bool = False) -> None:
        self.pipelining = pipelining
        self.port = 0
        self.messages: list[Received] = []
        self._plans: dict[str, deque[Fault]] = {}
        self._refused: dict[str, str] = {}
        self._sessions: list[object] = []
        self.stop: Callable[[], None] = lambda: None  # set by running(): stop serving now
        self.mail_reply: str | None = None  # e.g. "550 5.7.1 sender not allowed"
        self._lock = threading.Lock()

    def refuse(self, address: str, reply: str) -> None:
        """Answer every RCPT for this address with `reply`."""
        self._refused[address] = reply

    def plan(self, address: str, *faults: Fault) -> None:
        """Fail the next attempts for this address, one fault each, then accept it."""
        self._plans.setdefault(address, deque()).extend(faults)

    def recipients(self) -> set[str]:
        with self._lock:
            return {r for m in self.messages for r in m.recipients}

    def copies(self) -> Counter[str]:
        """How many messages each address was sent."""
        with self._lock:
            return Counter(r for m in self.messages for r in m.recipients)

    @property
    def connections(self) -> int:
        """How many connections sent at least one MAIL FROM."""
        with self._lock:
            return len(self._sessions)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]] if self.pipelining else responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self._lock:
            if not any(s is session for s in self._sessions):
                self._sessions.append(session)
        if self.mail_reply is not None:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self._refused:
            return self._refused[address]
        plan = self._plans.get(address)
        fault = plan.popleft() if plan else None
        if fault == DROP_BEFORE_DATA:
            server.transport.close()
            return "421 4.4.2 gone"  # never reaches the client
        if isinstance(fault, str) and fault != DROP_AFTER_DATA:
            return fault
        envelope.rcpt_tos.append(address)
        envelope.faults = [*getattr(envelope, "faults", []), fault]
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.messages.append(
                Received(
                    envelope.mail_from,
                    tuple(envelope.rcpt_tos),
                    bytes(envelope.content),
                    time.monotonic(),
                    tuple(envelope.mail_options),
                )
            )
        for fault in getattr(envelope, "faults", []):
            if fault == DROP_AFTER_DATA:
                server.transport.close()
                return "451 4.3.0 gone"  # never reaches the client
            if isinstance(fault, SlowData):
                await asyncio.sleep(fault.seconds)
        return "250 2.0.0 queued"


def free_port() -> int:
    """A port nothing listens on right now (Controller probes its port, so 0 will not do)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def password_checker(username: str, password: str) -> Any:
    """An aiosmtpd authenticator accepting only this username and password."""

    def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == username.encode()
            and data.password == password.encode()
        )
        return AuthResult(success=ok, handled=False)

    return check


@contextmanager
def running(recorder: SmtpRecorder, **smtp_options: Any) -> Iterator[SmtpRecorder]:
    """Serve `recorder` on 127.0.0.1 for the block; options go to aiosmtpd's Controller.

    tls_context= offers STARTTLS; ssl_context= speaks TLS from the first byte (port 465 style).
    """
    controller = Controller(recorder, hostname="127.0.0.1", port=free_port(), **smtp_options)
    controller.start()
    recorder.port = controller.port
    running = [True]

    def stop() -> None:
        if running.pop() if running else False:
            controller.stop()

    recorder.stop = stop
    try:
        yield recorder
    finally:
        stop()


def server_tls_context(cert: Any) -> ssl.SSLContext:
    """A server-side context holding a trustme certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


@contextmanager
def starttls_relay(ca: Any, *, username: str, password: str) -> Iterator[SmtpRecorder]:
    """A relay that requires STARTTLS (a certificate from the test CA `ca`) and this login."""
    with running(
        SmtpRecorder(),
        tls_context=server_tls_context(ca.issue_cert("127.0.0.1")),
        require_starttls=True,
        authenticator=password_checker(username, password),
    ) as relay:
        yield relay


def kill_at(process: subprocess.Popen[Any], recorder: SmtpRecorder, messages: int) -> None:
    """SIGKILL the process once the server has `messages` messages: with slow replies, the last
    one is still awaiting its answer, so its fate is unknown to the sender."""
    signal_when(
        process,
        lambda: len(recorder.messages) >= messages,
        signal.SIGKILL,
        what=f"message {messages}",
    )
