"""Twisted protocols that carry DNS messages to and from a Responder.

UDP: one datagram, one reply.  TCP follows RFC 7766: every message has a
two-octet length prefix (RFC 1035 section 4.2.2), several queries may
arrive back to back and are all answered (section 6.2.1.1), an idle
connection is closed after a timeout (section 6.2.3), and the number of
open connections is capped so idle clients cannot exhaust descriptors.

Protocols hold a ResponderSlot, not a Responder, so a reload swaps the
zones for every listener at once.
"""

from __future__ import annotations

import logging
import socket
import struct
from dataclasses import dataclass
from typing import Any

from twisted.internet import protocol
from twisted.internet.interfaces import IAddress, IListeningPort, IPushProducer
from zope.interface import implementer

from dnsrouter.responder import Responder

log = logging.getLogger("dnsrouter.server")

# A pending TCP message cannot exceed the 16-bit length plus its prefix.
MAX_TCP_BUFFER = 2 + 65535
LISTEN_BACKLOG = 1024


class ResponderSlot:
    """The Responder in service; replaced whole on reload."""

    def __init__(self, responder: Responder) -> None:
        self.current = responder


class DnsDatagramProtocol(protocol.DatagramProtocol):
    """Answers each UDP datagram; sends nothing when told to drop it."""

    transport: Any  # Twisted's interface stubs do not type these calls

    def __init__(self, slot: ResponderSlot) -> None:
        self.slot = slot

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        reply = self.slot.current.respond(datagram, addr[0], "udp")
        if reply is not None:
            try:
                self.transport.write(reply, addr)
            except OSError as exc:
                # A peer gone between query and reply is not our fault.
                log.debug("udp send_failed peer=%s error=%s", addr[0], exc)


@implementer(IPushProducer)
class DnsStreamProtocol(protocol.Protocol):
    """One TCP connection: length-framed queries, answered in order.

    The protocol registers itself as the producer of its replies: when a
    client stops reading and the transport's buffer fills, Twisted pauses
    us and we stop reading its queries, so memory stays bounded.
    """

    transport: Any

    def __init__(self, factory: "DnsStreamFactory") -> None:
        self.factory = factory
        self.buffer = b""
        self.timer: Any = None
        self.peer = ""

    def connectionMade(self) -> None:
        self.peer = _host(self.transport.getPeer())
        self.factory.active += 1
        self.transport.registerProducer(self, True)
        self.timer = self.factory.reactor.callLater(
            self.factory.idle_timeout, self._idle
        )

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if self.timer is not None and self.timer.active():
            self.timer.reset(self.factory.idle_timeout)
        responder = self.factory.slot.current
        while len(self.buffer) >= 2:
            (length,) = struct.unpack_from("!H", self.buffer)
            if len(self.buffer) < 2 + length:
                break
            message = self.buffer[2 : 2 + length]
            self.buffer = self.buffer[2 + length :]
            reply = responder.respond(message, self.peer, "tcp")
            if reply is not None:
                self.transport.write(struct.pack("!H", len(reply)) + reply)

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.transport.loseConnection()

    def _idle(self) -> None:
        self.timer = None
        log.debug("tcp idle_close peer=%s", self.peer)
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.active -= 1
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


class DnsStreamFactory(protocol.ServerFactory):
    """Builds TCP protocols up to `max_connections` open at once."""

    def __init__(
        self,
        slot: ResponderSlot,
        reactor: Any,
        idle_timeout: float,
        max_connections: int,
    ) -> None:
        self.slot = slot
        self.reactor = reactor
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.active = 0

    # Twisted's stub says Protocol; None is its documented refusal.
    def buildProtocol(  # type: ignore[override]
        self, addr: IAddress
    ) -> DnsStreamProtocol | None:
        if self.active >= self.max_connections:
            # Returning None makes Twisted close the connection at once.
            log.warning("tcp connection_refused peer=%s reason=cap", _host(addr))
            return None

        return DnsStreamProtocol(self)


def _host(address: Any) -> str:
    return str(getattr(address, "host", ""))


@dataclass(frozen=True)
class ListenSpec:
    """Where to listen and how: the protocols and timing for one address."""

    host: str
    port: int
    reuse_port: bool = False


def listen(
    reactor: Any,
    spec: ListenSpec,
    udp: DnsDatagramProtocol,
    tcp: DnsStreamFactory,
) -> tuple[IListeningPort, IListeningPort]:
    """Start UDP and TCP on one address; port 0 picks one port for both.

    `udp` must be a fresh protocol: Twisted binds one per port.

    With `reuse_port`, sockets are opened with SO_REUSEPORT so several
    worker processes share the address and the kernel spreads queries.
    Raises OSError (address in use, no such address).
    """
    if spec.reuse_port:
        return _listen_reuse(reactor, spec, udp, tcp)

    udp_port = reactor.listenUDP(spec.port, udp, interface=spec.host)
    port = udp_port.getHost().port
    try:
        tcp_port = reactor.listenTCP(
            port, tcp, backlog=LISTEN_BACKLOG, interface=spec.host
        )
    except Exception:
        udp_port.stopListening()
        raise

    return udp_port, tcp_port


def _listen_reuse(
    reactor: Any,
    spec: ListenSpec,
    udp: DnsDatagramProtocol,
    tcp: DnsStreamFactory,
) -> tuple[IListeningPort, IListeningPort]:
    family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
    sockets = []
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        sock = socket.socket(family, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((spec.host, spec.port))
        if kind == socket.SOCK_STREAM:
            sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
        sockets.append(sock)
    try:
        udp_port = reactor.adoptDatagramPort(sockets[0].fileno(), family, udp)
        tcp_port = reactor.adoptStreamPort(sockets[1].fileno(), family, tcp)
    finally:
        # The reactor holds duplicates of the descriptors.
        for sock in sockets:
            sock.close()

    return udp_port, tcp_port
