"""Authoritative DNS server that routes CDN hostnames to the nearest edge."""

__version__ = "0.1.0"
