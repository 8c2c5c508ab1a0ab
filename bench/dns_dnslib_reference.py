"""Reference server for bench/dns_router.py: Twisted UDP, dnslib parsing.

This is the "Twisted server that parses with dnslib" of DESIGN.md's
performance section: every query is decoded with `DNSRecord.parse`, its
answer taken from the zone file loaded with dnslib's own zone parser
(enough for the fixture zone) and packed with dnslib.  It answers A for
cdn.example.com with a fixed edge so the CDN query mix can run too.

Usage: python bench/dns_dnslib_reference.py ZONEFILE PORT
"""

from __future__ import annotations

import sys
from collections import defaultdict

from dnslib import QTYPE, RCODE, RR, DNSRecord
from twisted.internet import protocol, reactor


def load(path: str) -> dict[tuple[str, int], list[RR]]:
    records: dict[tuple[str, int], list[RR]] = defaultdict(list)
    with open(path) as handle:
        for rr in RR.fromZone(handle.read()):
            records[(str(rr.rname).lower(), rr.rtype)].append(rr)
    records[("cdn.example.com.", QTYPE.A)] = RR.fromZone(
        "cdn.example.com. 30 IN A 192.0.2.41"
    )

    return records


class Reference(protocol.DatagramProtocol):
    def __init__(self, records: dict[tuple[str, int], list[RR]]) -> None:
        self.records = records
        self.names = {name for name, _ in records}

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        try:
            query = DNSRecord.parse(datagram)
        except Exception:
            return
        reply = query.reply(ra=0, aa=1)
        name = str(query.q.qname).lower()
        answers = self.records.get((name, query.q.qtype), [])
        for rr in answers:
            reply.add_answer(rr)
        if not answers and name not in self.names:
            reply.header.rcode = RCODE.NXDOMAIN
        self.transport.write(reply.pack(), addr)


def main() -> None:
    records = load(sys.argv[1])
    reactor.listenUDP(int(sys.argv[2]), Reference(records), interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
