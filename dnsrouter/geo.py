"""Great-circle distance between points on the Earth.

The haversine form is used because it stays accurate for the short
distances that decide between nearby PoPs, where the spherical law of
cosines loses precision; the sphere's error against the WGS 84 ellipsoid
(under 0.5 %) is far below GeoIP's own accuracy.
"""

from __future__ import annotations

import math

# Mean Earth radius (IUGG), in kilometres.
EARTH_RADIUS_KM = 6371.0088


def distance_km(
    latitude1: float, longitude1: float, latitude2: float, longitude2: float
) -> float:
    """Great-circle distance in kilometres between two points in degrees."""
    phi1 = math.radians(latitude1)
    phi2 = math.radians(latitude2)
    dphi = phi2 - phi1
    dlambda = math.radians(longitude2 - longitude1)
    h = (
        math.sin(dphi / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    )

    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))
