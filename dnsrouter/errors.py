"""The exceptions of the DNS side; every message names the bad value."""


class DnsRouterError(Exception):
    """Root of every error the router raises on purpose."""


class ConfigError(DnsRouterError):
    """A configuration file is unreadable or invalid; the message names the
    file, the key and the problem."""


class ZoneError(DnsRouterError):
    """A zone file cannot be loaded; the message is `file:line: reason`."""


class MalformedPacketError(DnsRouterError):
    """A DNS message violates the wire format; the reply is FORMERR."""


class MalformedEcsError(MalformedPacketError):
    """An EDNS Client Subnet option violates RFC 7871 section 6."""


class GeoIPError(DnsRouterError):
    """The GeoIP database is missing or not in MaxMind format."""


class ListenError(DnsRouterError):
    """A listen address cannot be bound; the message names the config
    file, `server.listen`, the address and the reason."""
