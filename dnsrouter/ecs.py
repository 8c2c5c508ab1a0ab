"""EDNS Client Subnet (RFC 7871): the option's DATA, parsed and encoded.

Parsing is strict where RFC 7871 section 6 says a server SHOULD answer
FORMERR: an ADDRESS longer or shorter than SOURCE PREFIX-LENGTH needs,
address bits set beyond the source prefix, a source prefix longer than the
family allows, or a non-zero SCOPE PREFIX-LENGTH in a query (section 7.1.1).

One leniency, chosen on purpose: FAMILY 0 with SOURCE 0 and no ADDRESS,
which older dig and getdns send for "do not use my address", is accepted
and treated as "no client information", exactly like FAMILY 1 with SOURCE
0 (section 7.1.2). Refusing it is defensible under section 7.2.1, but it is
the interoperability failure operators reported against other servers.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from dnsrouter.errors import MalformedEcsError

ECS_OPTION_CODE = 8

# RFC 7871 section 6 refers to the IANA Address Family Numbers registry.
FAMILY_IPV4 = 1
FAMILY_IPV6 = 2
_ADDRESS_BITS = {FAMILY_IPV4: 32, FAMILY_IPV6: 128}

_HEADER = struct.Struct("!HBB")


@dataclass(frozen=True)
class ClientSubnet:
    """A decoded ECS option as the query carried it."""

    family: int            # 1 or 2 (0 allowed only with source_prefix 0)
    source_prefix: int
    scope_prefix: int      # as received (must be 0 in queries)
    address: bytes         # exactly as received on the wire
    network: ipaddress.IPv4Network | ipaddress.IPv6Network  # address/source

    @property
    def has_client_address(self) -> bool:
        """False for SOURCE 0: the client asked that no address be used."""
        return self.source_prefix > 0


def parse_client_subnet(data: bytes) -> ClientSubnet:
    """Decode the DATA of an ECS option found in a query's OPT record.

    Raises MalformedEcsError (the reply is FORMERR, RFC 7871 section 7.2.1)
    for every violation of section 6 listed in the module docstring.
    """
    if len(data) < _HEADER.size:
        raise MalformedEcsError(
            f"ECS option has {len(data)} octets, expected at least 4"
        )
    family, source, scope = _HEADER.unpack_from(data)
    address = bytes(data[_HEADER.size:])

    if family == 0 and source == 0:
        # Section 7.1.2 note: old clients send FAMILY 0 with SOURCE 0.
        return _no_address(family, scope, address)
    bits = _ADDRESS_BITS.get(family)
    if bits is None:
        raise MalformedEcsError(f"ECS FAMILY {family} is not 1 (IPv4) or 2 (IPv6)")
    if source > bits:
        raise MalformedEcsError(
            f"ECS SOURCE PREFIX-LENGTH {source} exceeds {bits} for FAMILY {family}"
        )
    if scope != 0:
        # Section 7.1.1: SCOPE PREFIX-LENGTH MUST be 0 in queries.
        raise MalformedEcsError(
            f"ECS SCOPE PREFIX-LENGTH {scope} in a query, expected 0"
        )
    expected = (source + 7) // 8
    if len(address) != expected:
        raise MalformedEcsError(
            f"ECS ADDRESS has {len(address)} octets, "
            f"SOURCE PREFIX-LENGTH {source} needs {expected}"
        )
    padded = int.from_bytes(address.ljust(bits // 8, b"\0"), "big")
    if padded & ((1 << (bits - source)) - 1):
        # Section 6: bits beyond SOURCE PREFIX-LENGTH MUST be zero.
        raise MalformedEcsError(
            f"ECS ADDRESS {address.hex()} has bits set beyond /{source}"
        )
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    if family == FAMILY_IPV4:
        network = ipaddress.IPv4Network((padded, source))
    else:
        network = ipaddress.IPv6Network((padded, source))

    return ClientSubnet(family, source, scope, address, network)


def _no_address(family: int, scope: int, address: bytes) -> ClientSubnet:
    if scope != 0 or address:
        raise MalformedEcsError(
            "ECS with SOURCE PREFIX-LENGTH 0 must carry SCOPE 0 and no ADDRESS"
        )

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    if family == FAMILY_IPV6:
        network = ipaddress.IPv6Network("::/0")
    else:
        network = ipaddress.IPv4Network("0.0.0.0/0")

    return ClientSubnet(family, 0, 0, b"", network)


def encode_client_subnet(subnet: ClientSubnet, scope_prefix: int) -> bytes:
    """The DATA of the ECS option echoed in a reply (RFC 7871 section 7.2.1).

    FAMILY, SOURCE PREFIX-LENGTH and ADDRESS are copied byte for byte from
    the query; only SCOPE PREFIX-LENGTH is ours. A query with no address
    (SOURCE 0) always gets SCOPE 0: nothing about it can be narrower.
    """
    if subnet.source_prefix == 0:
        scope_prefix = 0
    limit = _ADDRESS_BITS.get(subnet.family, 0)
    scope_prefix = max(0, min(scope_prefix, limit))

    return _HEADER.pack(subnet.family, subnet.source_prefix, scope_prefix) + (
        subnet.address
    )


def client_subnet_from_text(text: str) -> ClientSubnet:
    """Build the ClientSubnet a resolver would send for `text` ("a.b.c.d/n").

    Used by the CLI and tests; host bits are cleared like `dig +subnet`.
    Raises ValueError for text that is not a network.
    """
    network = ipaddress.ip_network(text, strict=False)
    family = FAMILY_IPV4 if network.version == 4 else FAMILY_IPV6
    octets = (network.prefixlen + 7) // 8
    address = network.network_address.packed[:octets]

    return ClientSubnet(family, network.prefixlen, 0, address, network)
