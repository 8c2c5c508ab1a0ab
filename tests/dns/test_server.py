"""The Twisted protocols on fake transports and virtual time: UDP replies,
RFC 7766 framing, pipelining, idle timeout and the connection cap."""

from __future__ import annotations

import struct
from typing import Any

import dns.message
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from dnsrouter.server import (
    CLOSE_GRACE,
    DnsDatagramProtocol,
    DnsStreamFactory,
    DnsStreamProtocol,
    ResponderSlot,
)
from tests.dns.helpers import make_responder

# Twisted's stubs do not declare IPv4Address an IAddress.
PEER: Any = IPv4Address("TCP", "192.0.2.1", 40000)


class FakeDatagramTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, object]] = []

    def write(self, data: bytes, addr: object) -> None:
        self.sent.append((data, addr))


class ThrottledTransport(StringTransport):
    """Pauses its push producer past 64 KiB unsent, as Twisted's TCP
    transport does; `drain` plays the client reading everything."""

    limit = 65536

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.value()) > self.limit and self.producer is not None:
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        sent = self.value()
        self.clear()
        if self.producerState == "paused" and self.producer is not None:
            self.producer.resumeProducing()

        return sent


def query(name: str, qid: int, **kwargs: Any) -> bytes:
    message = dns.message.make_query(name, "A", id=qid, use_edns=False, **kwargs)
    return message.to_wire()


def framed(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def unframe(stream: bytes) -> list[dns.message.Message]:
    out = []
    while stream:
        (length,) = struct.unpack_from("!H", stream)
        out.append(dns.message.from_wire(stream[2 : 2 + length]))
        stream = stream[2 + length :]
    return out


def frame_ids(stream: bytes) -> list[int]:
    """The message IDs of a run of framed messages, without parsing."""
    ids, offset = [], 0
    while offset < len(stream):
        length, qid = struct.unpack_from("!HH", stream, offset)
        ids.append(qid)
        offset += 2 + length

    return ids


def connect(factory: DnsStreamFactory) -> tuple[DnsStreamProtocol, StringTransport]:
    proto = factory.buildProtocol(PEER)
    assert proto is not None
    transport = StringTransport(peerAddress=PEER)
    proto.makeConnection(transport)
    return proto, transport


def make_factory(reactor: MemoryReactorClock, cap: int = 4) -> DnsStreamFactory:
    return DnsStreamFactory(ResponderSlot(make_responder()), reactor, 10.0, cap)


def test_udp_reply_goes_back_to_the_sender_and_drops_are_silent() -> None:
    """A query is answered to its source; a response (QR) gets nothing."""
    proto = DnsDatagramProtocol(ResponderSlot(make_responder()))
    proto.transport = FakeDatagramTransport()  # type: ignore[assignment]

    proto.datagramReceived(query("www.example.com", 7), ("192.0.2.1", 5353))
    proto.datagramReceived(b"\x00\x01\x80" + b"\x00" * 9, ("192.0.2.1", 5353))

    ((reply, addr),) = proto.transport.sent
    assert addr == ("192.0.2.1", 5353) and dns.message.from_wire(reply).id == 7


def test_tcp_pipelined_queries_split_anywhere_all_get_framed_replies() -> None:
    """D04 5 / RFC 7766 6.2.1.1: two queries back to back, delivered in
    odd-sized pieces, get two complete length-prefixed replies."""
    reactor = MemoryReactorClock()
    proto, transport = connect(make_factory(reactor))
    stream = framed(query("big.example.com", 1)) + framed(query("www.example.com", 2))

    for start in range(0, len(stream), 7):
        proto.dataReceived(stream[start : start + 7])

    replies = unframe(transport.value())
    assert [r.id for r in replies] == [1, 2]
    assert len(replies[0].answer[0]) == 40


def test_tcp_partial_octets_do_not_restart_the_idle_timer() -> None:
    """RFC 7766 10: an octet every second never completes a message and
    never delays the close; the message clock cuts it at 5 seconds."""
    reactor = MemoryReactorClock()
    proto, transport = connect(make_factory(reactor))
    stream = framed(query("www.example.com", 3))

    for octet in stream[:4]:
        proto.dataReceived(bytes([octet]))
        reactor.advance(1)
    assert not transport.disconnecting
    reactor.advance(1.1)

    assert transport.disconnected and transport.value() == b""


def test_tcp_message_clock_restarts_for_each_message() -> None:
    """Whole messages within the limit keep a connection: the clock runs
    from the first octet of each message, not of the connection."""
    reactor = MemoryReactorClock()
    proto, transport = connect(make_factory(reactor))
    stream = framed(query("www.example.com", 4)) * 3

    for start in range(0, len(stream), 11):
        proto.dataReceived(stream[start : start + 11])
        reactor.advance(1)

    assert not transport.disconnecting
    assert [r.id for r in unframe(transport.value())] == [4, 4, 4]


def test_tcp_idle_close_is_cut_short_when_replies_are_never_read() -> None:
    """A graceful idle close waits for unsent replies only CLOSE_GRACE;
    a connection paused on unread replies is cut at the idle timeout."""
    reactor = MemoryReactorClock()
    factory = make_factory(reactor)
    quiet, quiet_transport = connect(factory)
    stuck, stuck_transport = connect(factory)
    stuck.pauseProducing()

    reactor.advance(10)
    assert stuck_transport.disconnected
    assert quiet_transport.disconnecting and not quiet_transport.disconnected
    reactor.advance(CLOSE_GRACE)

    assert quiet_transport.disconnected


def test_tcp_idle_connection_is_closed_after_the_timeout() -> None:
    """RFC 7766 6.2.3: a connection idle for the timeout is closed; traffic
    restarts the timer."""
    reactor = MemoryReactorClock()
    proto, transport = connect(make_factory(reactor))

    reactor.advance(9)
    proto.dataReceived(framed(query("www.example.com", 3)))
    reactor.advance(9)
    assert not transport.disconnecting
    reactor.advance(1.5)

    assert transport.disconnecting


def test_tcp_cap_refuses_a_new_connection_when_every_one_is_busy() -> None:
    """Over the cap with every connection holding unread replies,
    buildProtocol returns None (Twisted closes it) until one closes."""
    reactor = MemoryReactorClock()
    factory = make_factory(reactor, cap=2)
    first, _ = connect(factory)
    second, _ = connect(factory)
    first.pauseProducing()
    second.pauseProducing()

    assert factory.buildProtocol(PEER) is None
    first.connectionLost(None)
    assert factory.buildProtocol(PEER) is not None


def test_tcp_cap_displaces_the_connection_idle_longest() -> None:
    """RFC 7766 6.2.3: at the cap, the connection idle the longest is
    closed to admit the new one; a busy one and a recent one stay."""
    reactor = MemoryReactorClock()
    factory = make_factory(reactor, cap=3)
    busy, busy_transport = connect(factory)
    oldest, oldest_transport = connect(factory)
    recent, recent_transport = connect(factory)
    busy.pauseProducing()
    reactor.advance(1)
    recent.dataReceived(framed(query("www.example.com", 1)))

    assert factory.buildProtocol(PEER) is not None
    assert oldest_transport.disconnected
    assert not recent_transport.disconnecting
    assert not busy_transport.disconnecting
    assert factory.active == 2


def test_tcp_cap_displaces_the_slowest_sender_when_none_is_idle() -> None:
    """Slowloris at the cap: with no idle connection, the one whose
    unfinished message began longest ago (over a second) makes room;
    a message begun just now does not."""
    reactor = MemoryReactorClock()
    factory = make_factory(reactor, cap=2)
    slow, slow_transport = connect(factory)
    slow.dataReceived(b"\x00\x30")
    reactor.advance(2)
    fresh, fresh_transport = connect(factory)
    fresh.dataReceived(b"\x00\x30")

    newcomer, _ = connect(factory)
    newcomer.dataReceived(b"\x00")

    assert slow_transport.disconnected and not fresh_transport.disconnecting
    assert factory.buildProtocol(PEER) is None


def test_tcp_zero_length_and_garbage_frames_do_not_break_the_stream() -> None:
    """A zero-length frame is dropped, garbage gets FORMERR, and the next
    query on the connection is still answered."""
    reactor = MemoryReactorClock()
    proto, transport = connect(make_factory(reactor))

    proto.dataReceived(b"\x00\x00" + framed(b"\x12\x34" + b"\x00" * 4 + b"\xff" * 8))
    proto.dataReceived(framed(query("www.example.com", 9)))

    stream = transport.value()
    (length,) = struct.unpack_from("!H", stream)
    assert stream[2:4] == b"\x12\x34" and stream[5] & 0x0F == 1
    assert unframe(stream[2 + length :])[0].id == 9


def test_tcp_reader_that_stops_reading_pauses_query_intake() -> None:
    """Backpressure: when the transport's buffer is full Twisted pauses the
    protocol, which stops reading the socket until it drains."""
    proto, transport = connect(make_factory(MemoryReactorClock()))

    assert transport.producer is proto
    proto.pauseProducing()
    assert transport.producerState == "paused"
    proto.resumeProducing()
    assert transport.producerState == "producing"


def test_tcp_replies_held_for_a_client_that_does_not_read_stay_bounded() -> None:
    """RFC 7766 6.2.1.1 and 10: 2,000 pipelined queries with 700-octet
    replies against a client that does not read: answering stops at the
    transport's 64 KiB mark; the rest are answered, in order, as the
    client drains them."""
    reactor = MemoryReactorClock()
    proto = make_factory(reactor).buildProtocol(PEER)
    assert proto is not None
    transport = ThrottledTransport(peerAddress=PEER)
    proto.makeConnection(transport)
    stream = b"".join(framed(query("big.example.com", n)) for n in range(2000))

    proto.dataReceived(stream)
    held = len(transport.value())
    ids = []
    for _ in range(100):
        ids += frame_ids(transport.drain())

    assert held <= ThrottledTransport.limit + 2 + 65535
    assert held < 2 * ThrottledTransport.limit
    assert ids == list(range(2000))
