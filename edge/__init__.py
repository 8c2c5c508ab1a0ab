"""HTTP edge cache: a reverse proxy that keeps copies of origin content."""

__version__ = "0.1.0"
