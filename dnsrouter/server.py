"""Twisted protocols that carry DNS messages to and from a Responder.

UDP: one datagram, one reply.  TCP follows RFC 7766: every message has a
two-octet length prefix (RFC 1035 section 4.2.2), several queries may
arrive back to back and are all answered (section 6.2.1.1), an idle
connection is closed after a timeout (section 6.2.3), and the number of
open connections is capped so idle clients cannot exhaust descriptors.
Section 10's abuses are bounded too: a client that does not read its
replies stops being read, one that trickles octets is cut off, and at
the cap an idle or trickling connection makes room for a new one.

Protocols hold a ResponderSlot, not a Responder, so a reload swaps the
zones for every listener at once.
"""

from __future__ import annotations

import errno
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

LISTEN_BACKLOG = 1024

# Port 0 asks for any port; the one UDP gets may be taken for TCP, so a
# few picks are tried before giving up.
PORT_PICK_ATTEMPTS = 8

# Time to receive one whole TCP message once its first octet is in.  A
# query is one or two segments, so a client slower than this is holding
# a connection, not sending (RFC 7766 section 10).
MESSAGE_TIMEOUT = 5.0

# After a graceful close, time for unsent replies to drain before the
# connection is cut; a client that does not read must not keep it.
CLOSE_GRACE = 2.0

# At the connection cap, a connection whose unfinished message began
# this long ago may be displaced; a normal query arrives well within it.
EVICT_SLOW_AFTER = 1.0


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

    Memory: the protocol is the push producer of its replies.  When a
    client stops reading and the transport holds more than its buffer
    size (64 KiB), Twisted pauses us; we then answer nothing more and
    stop reading the socket until the replies drain, so one connection
    holds at most one read of queries and the buffer plus one reply.

    Time (RFC 7766 section 6.2.3 and 10): the idle timer restarts only
    when a whole query has been answered, never on partial octets; a
    message must arrive whole within MESSAGE_TIMEOUT of its first octet;
    a client that leaves replies unread until the idle timer fires is
    cut off, since a graceful close would wait on it for ever.
    """

    transport: Any

    def __init__(self, factory: "DnsStreamFactory") -> None:
        self.factory = factory
        self.buffer = bytearray()
        self.peer = ""
        self.paused = False
        self.idle_timer: Any = None
        self.message_timer: Any = None
        self.message_started = 0.0
        self.abort_timer: Any = None

    def connectionMade(self) -> None:
        self.peer = _host(self.transport.getPeer())
        self.factory.opened(self)
        self.transport.registerProducer(self, True)
        self.idle_timer = self.factory.reactor.callLater(
            self.factory.idle_timeout, self._idle
        )

    def is_idle(self) -> bool:
        """No query in flight: nothing half received, no replies stuck."""
        return not self.buffer and not self.paused

    def is_receiving(self) -> bool:
        """A message is half received (its first octets are in)."""
        return self.message_timer is not None

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        self._answer_whole_messages()

    def _answer_whole_messages(self) -> None:
        """Answer each whole message in the buffer until paused, then
        set the timers for what is left."""
        buffer = self.buffer
        responder = self.factory.slot.current
        offset = 0
        answered = False
        while not self.paused and len(buffer) - offset >= 2:
            (length,) = struct.unpack_from("!H", buffer, offset)
            end = offset + 2 + length
            if len(buffer) < end:
                break
            message = bytes(buffer[offset + 2 : end])
            offset = end
            answered = True
            reply = responder.respond(message, self.peer, "tcp")
            if reply is not None:
                # May call pauseProducing, which ends this loop.
                self.transport.write(struct.pack("!H", len(reply)) + reply)
        del buffer[:offset]

        if answered:
            self.factory.touched(self)
            if self.idle_timer is not None and self.idle_timer.active():
                self.idle_timer.reset(self.factory.idle_timeout)
        self._time_message(answered)

    def _time_message(self, answered: bool) -> None:
        """Start the whole-message clock when a new message has begun;
        stop it when nothing is half received or we are not reading."""
        if not self.buffer or self.paused:
            self._cancel_message_timer()
        elif answered or self.message_timer is None:
            self._cancel_message_timer()
            self.message_started = self.factory.reactor.seconds()
            self.message_timer = self.factory.reactor.callLater(
                self.factory.message_timeout, self._too_slow
            )

    def _cancel_message_timer(self) -> None:
        if self.message_timer is not None and self.message_timer.active():
            self.message_timer.cancel()
        self.message_timer = None

    def pauseProducing(self) -> None:
        self.paused = True
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        self._answer_whole_messages()
        if not self.paused:
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.transport.loseConnection()

    def _too_slow(self) -> None:
        self.message_timer = None
        log.info("tcp slow_message_close peer=%s", self.peer)
        self.transport.abortConnection()

    def _idle(self) -> None:
        self.idle_timer = None
        if self.paused:
            log.info("tcp unread_replies_close peer=%s", self.peer)
            self.transport.abortConnection()
            return

        log.debug("tcp idle_close peer=%s", self.peer)
        self.transport.loseConnection()
        # Replies the client never reads would hold a graceful close open.
        self.abort_timer = self.factory.reactor.callLater(
            CLOSE_GRACE, self.transport.abortConnection
        )

    def evict(self, reason: str) -> None:
        """Close now to make room for a new connection (RFC 7766 6.2.3)."""
        log.info("tcp evict peer=%s reason=%s", self.peer, reason)
        self.factory.closed(self)
        self.transport.abortConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.closed(self)
        self._cancel_message_timer()
        for timer in (self.idle_timer, self.abort_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self.idle_timer = self.abort_timer = None


class DnsStreamFactory(protocol.ServerFactory):
    """Builds TCP protocols up to `max_connections` open at once.

    At the cap, a new connection first displaces the connection idle the
    longest, else the one that has spent longest on an unfinished
    message (past EVICT_SLOW_AFTER); only when every connection has a
    query being answered is the new one refused (RFC 7766 section 6.2.3).
    """

    def __init__(
        self,
        slot: ResponderSlot,
        reactor: Any,
        idle_timeout: float,
        max_connections: int,
        message_timeout: float = MESSAGE_TIMEOUT,
    ) -> None:
        self.slot = slot
        self.reactor = reactor
        self.idle_timeout = idle_timeout
        self.message_timeout = message_timeout
        self.max_connections = max_connections
        # Least recently answered first: the eviction order.
        self.connections: dict[DnsStreamProtocol, None] = {}

    @property
    def active(self) -> int:
        """Connections open and counted against the cap."""
        return len(self.connections)

    def opened(self, proto: DnsStreamProtocol) -> None:
        self.connections[proto] = None

    def touched(self, proto: DnsStreamProtocol) -> None:
        """A query was answered on `proto`: it is now the most recent."""
        if self.connections.pop(proto, False) is None:
            self.connections[proto] = None

    def closed(self, proto: DnsStreamProtocol) -> None:
        self.connections.pop(proto, None)

    # Twisted's stub says Protocol; None is its documented refusal.
    def buildProtocol(  # type: ignore[override]
        self, addr: IAddress
    ) -> DnsStreamProtocol | None:
        if self.active >= self.max_connections and not self._make_room():
            # Returning None makes Twisted close the connection at once.
            log.warning("tcp connection_refused peer=%s reason=cap", _host(addr))
            return None

        return DnsStreamProtocol(self)

    def _make_room(self) -> bool:
        """Evict one connection that is idle, or slow to send a message."""
        victim = next((p for p in self.connections if p.is_idle()), None)
        reason = "idle"
        if victim is None:
            cutoff = self.reactor.seconds() - EVICT_SLOW_AFTER
            slow = [
                p
                for p in self.connections
                if p.is_receiving() and p.message_started <= cutoff
            ]
            victim = min(slow, key=lambda p: p.message_started, default=None)
            reason = "slow_message"
        if victim is None:
            return False

        victim.evict(reason)

        return True


def _host(address: Any) -> str:
    return str(getattr(address, "host", ""))


@dataclass(frozen=True)
class BoundAddress:
    """The UDP and TCP sockets of one listen address, bound and listening.

    Bound once, by the process that starts the service, and shared by
    every worker it forks (each adopts them into its reactor): no
    SO_REUSEPORT, so another server cannot bind the same address and
    take a share of the queries, and a worker that dies leaves the
    sockets, and the queries queued on them, to the others.
    """

    host: str
    port: int
    family: int
    udp: socket.socket
    tcp: socket.socket

    def close(self) -> None:
        """Close this process's descriptors (forked copies stay open)."""
        self.udp.close()
        self.tcp.close()


def bind_address(host: str, port: int) -> BoundAddress:
    """Bind UDP and TCP on one address; port 0 picks one port for both.

    Raises OSError (address in use, no such address, no permission).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(PORT_PICK_ATTEMPTS if port == 0 else 1):
        udp = _socket(family, socket.SOCK_DGRAM)
        try:
            udp.bind((host, port))
            chosen = udp.getsockname()[1]
            tcp = _socket(family, socket.SOCK_STREAM)
            try:
                # Only past connections in TIME_WAIT; a live listener on
                # the address still makes bind fail.
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((host, chosen))
                tcp.listen(LISTEN_BACKLOG)
            except OSError:
                tcp.close()
                raise
        except OSError as error:
            udp.close()
            if port != 0 or error.errno != errno.EADDRINUSE:
                raise
            continue
        return BoundAddress(host, chosen, family, udp, tcp)

    raise OSError(errno.EADDRINUSE, "no port free for both UDP and TCP")


def _socket(family: int, kind: int) -> socket.socket:
    sock = socket.socket(family, kind)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.setblocking(False)

    return sock


def adopt(
    reactor: Any,
    bound: BoundAddress,
    udp: DnsDatagramProtocol,
    tcp: DnsStreamFactory,
) -> tuple[IListeningPort, IListeningPort]:
    """Serve a bound address with these protocols on `reactor`.

    `udp` must be a fresh protocol: Twisted binds one per port. The
    reactor holds duplicates of the descriptors; `bound` stays open.
    """
    udp_port = reactor.adoptDatagramPort(bound.udp.fileno(), bound.family, udp)
    tcp_port = reactor.adoptStreamPort(bound.tcp.fileno(), bound.family, tcp)

    return udp_port, tcp_port
