"""Geometry of the fleet's area queries: boxes, circles and polygons on a spherical earth.

Conventions:

- Angles are degrees, distances metres. The earth is a sphere of radius 6,371,008.8 m (the
  IUGG mean radius): distances are within about 0.5 % of the ellipsoid's, plenty for a fleet.
- Where GeoJSON is the format, its order holds: longitude first. A bbox is
  `minLon,minLat,maxLon,maxLat` (RFC 7946 section 5) and a position `[lon, lat]` or
  `[lon, lat, alt]`. `near` is `lat,lon`, latitude first, as people say it and as the API
  documents it. Every method takes `(lat, lon)`, the order of a Location's fields.
- Points tested are positions as stored: -90 <= lat <= 90, -180 <= lon <= 180. Longitudes 180
  and -180 are one meridian, and every test answers alike for both.
- Boundaries are inside: a bbox's edges, a circle's rim (distance <= radius) and a polygon's
  edges and vertices, those of its holes too (a point on a hole's edge is in the area).
  "On" an edge is what float arithmetic says: exact for vertices and for edges along a meridian
  or a parallel; a point on a slanted edge may fall either side by rounding.
- The antimeridian: a bbox with minLon > maxLon crosses it (RFC 7946 section 5.2). A polygon
  edge whose longitudes differ by more than 180 degrees crosses it too, the short way round, so
  a ring need not be split at 180 (one that is, the RFC 7946 way, works as well). The exception
  is an edge from -180 to 180 or back: the short way would be no edge at all, so it runs the
  whole way round, as in a polar cap `[[-180,80],[180,80],[180,90],[-180,90],[-180,80]]`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from math import asin, atan2, cos, degrees, sin, sqrt

import msgspec

from trackstore.errors import INVALID, Error

EARTH_RADIUS_M = 6_371_008.8
# Half the equator's length on the WGS 84 ellipsoid, as the API documents it; on this sphere
# half the circumference is 20,015,115 m, so the last 22 km of allowed radius change nothing.
MAX_RADIUS_M = 20_037_509

_RAD = math.pi / 180.0
_HALF_RAD = math.pi / 360.0
_DIAMETER_M = 2.0 * EARTH_RADIUS_M
_HALF_CIRCUMFERENCE_M = math.pi * EARTH_RADIUS_M
# Bounds are widened by this (about 1 dm) so that rounding never leaves a point of a circle
# out of them; a prefilter that lets a decimetre more through costs nothing.
_BOUNDS_PAD_DEG = 1e-6
# A circle reaching this close to a pole (about 6 m) gets every longitude: how far east and west
# it reaches is ill-conditioned there, and all longitudes are only a little more.
_NEAR_POLE = math.pi / 2 - 1e-6
# A circle's contains() decides from the haversine term alone unless the point is within this
# relative margin of the rim, where it asks distance_m so that both always agree.
_RIM = 1e-9


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The great-circle distance between two points, in metres."""
    s = sin((lat2 - lat1) * _HALF_RAD)
    t = sin((lon2 - lon1) * _HALF_RAD)
    a = s * s + cos(lat1 * _RAD) * cos(lat2 * _RAD) * t * t
    # Rounding can take nearly antipodal points a hair past 1, out of asin's domain.
    return _DIAMETER_M * asin(sqrt(a)) if a < 1.0 else _HALF_CIRCUMFERENCE_M


class BBox(msgspec.Struct, frozen=True, gc=False):
    """A longitude/latitude box, edges included. `min_lon > max_lon` crosses the antimeridian:
    the box holds lon >= min_lon or lon <= max_lon. A point on lon 180 or -180 is in a box
    that reaches either."""

    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float

    @property
    def crosses_antimeridian(self) -> bool:
        return self.min_lon > self.max_lon

    def contains(self, lat: float, lon: float) -> bool:
        if lat < self.min_lat or lat > self.max_lat:
            return False
        west = self.min_lon
        east = self.max_lon
        if west <= east:
            if west <= lon <= east:
                return True
        elif lon >= west or lon <= east:
            return True
        if lon == 180.0 or lon == -180.0:
            # One meridian, two names: a box reaching either holds the point.
            lon = -lon
            return west <= lon <= east if west <= east else lon >= west or lon <= east
        return False


@dataclass(frozen=True, slots=True)
class Circle:
    """The points within `radius_m` metres of (lat, lon), the rim included."""

    lat: float
    lon: float
    radius_m: float
    _cos_lat: float = field(init=False, repr=False, compare=False)
    _reach_deg: float = field(init=False, repr=False, compare=False)
    _surely_in: float = field(init=False, repr=False, compare=False)
    _surely_out: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        angle = self.radius_m / EARTH_RADIUS_M
        if angle >= math.pi:
            reach, surely_in, surely_out = math.inf, 2.0, 2.0
        else:
            # A point further north or south than the radius is further away than it, and the
            # haversine term grows with distance: both decide without asin or sqrt.
            reach = degrees(angle) * (1.0 + _RIM) + 1e-12
            term = sin(angle / 2.0) ** 2
            surely_in, surely_out = term * (1.0 - _RIM), term * (1.0 + _RIM)
        object.__setattr__(self, "_cos_lat", cos(self.lat * _RAD))
        object.__setattr__(self, "_reach_deg", reach)
        object.__setattr__(self, "_surely_in", surely_in)
        object.__setattr__(self, "_surely_out", surely_out)

    def distance_m(self, lat: float, lon: float) -> float:
        return haversine_m(self.lat, self.lon, lat, lon)

    def contains(self, lat: float, lon: float) -> bool:
        """distance_m(lat, lon) <= radius_m, exactly as that comparison answers."""
        north = lat - self.lat
        if north > self._reach_deg or north < -self._reach_deg:
            return False
        s = sin(north * _HALF_RAD)
        t = sin((lon - self.lon) * _HALF_RAD)
        a = s * s + self._cos_lat * cos(lat * _RAD) * t * t
        if a <= self._surely_in:
            return True
        if a > self._surely_out:
            return False
        return self.distance_m(lat, lon) <= self.radius_m

    def bounds(self) -> list[BBox]:
        """One box holding the whole circle, or two when it crosses the antimeridian (every box
        has min_lon <= max_lon); a circle that reaches a pole gets every longitude."""
        angle = self.radius_m / EARTH_RADIUS_M
        centre = self.lat * _RAD
        south = centre - angle
        north = centre + angle
        south_deg = max(-90.0, degrees(south) - _BOUNDS_PAD_DEG)
        north_deg = min(90.0, degrees(north) + _BOUNDS_PAD_DEG)
        if north >= _NEAR_POLE or south <= -_NEAR_POLE:
            return [BBox(-180.0, south_deg, 180.0, north_deg)]
        # The widest longitude is where a meridian touches the circle: asin(sin r / cos lat),
        # written so that it stays accurate as the circle nears a pole.
        spread = degrees(atan2(sin(angle), sqrt(cos(north) * cos(south)))) + _BOUNDS_PAD_DEG
        west = self.lon - spread
        east = self.lon + spread
        if west < -180.0:
            return [
                BBox(west + 360.0, south_deg, 180.0, north_deg),
                BBox(-180.0, south_deg, east, north_deg),
            ]
        if east > 180.0:
            return [
                BBox(west, south_deg, 180.0, north_deg),
                BBox(-180.0, south_deg, east - 360.0, north_deg),
            ]
        return [BBox(west, south_deg, east, north_deg)]


# -- parsing -------------------------------------------------------------------------------------


def parse_bbox(text: str) -> BBox:
    """`minLon,minLat,maxLon,maxLat`, whitespace around the numbers allowed; minLon > maxLon
    crosses the antimeridian."""
    parts = text.split(",")
    if len(parts) != 4:
        raise Error(
            INVALID,
            f"bbox must be four numbers minLon,minLat,maxLon,maxLat, got {len(parts)} "
            f"value{'s' if len(parts) != 1 else ''} in {shown(text)}",
        )
    min_lon, min_lat, max_lon, max_lat = (
        _number(part, f"bbox {name}")
        for part, name in zip(parts, ("minLon", "minLat", "maxLon", "maxLat"), strict=True)
    )
    order = "(bbox is minLon,minLat,maxLon,maxLat: longitude first)"
    for name, value in (("minLat", min_lat), ("maxLat", max_lat)):
        if not -90.0 <= value <= 90.0:
            raise Error(
                INVALID, f"bbox {name} must be between -90 and 90, got {num(value)} {order}"
            )
    for name, value in (("minLon", min_lon), ("maxLon", max_lon)):
        if not -180.0 <= value <= 180.0:
            raise Error(INVALID, f"bbox {name} must be between -180 and 180, got {num(value)}")
    if min_lat > max_lat:
        raise Error(
            INVALID,
            f"bbox minLat ({num(min_lat)}) must not be above maxLat ({num(max_lat)}): the "
            f"southern edge comes first {order}",
        )
    return BBox(min_lon, min_lat, max_lon, max_lat)


def parse_near(near: str, radius_m: str | None) -> Circle:
    """`near` is `lat,lon` (latitude first); `radius_m` metres, 0 < radius_m <= MAX_RADIUS_M,
    required with it."""
    parts = near.split(",")
    if len(parts) != 2:
        raise Error(
            INVALID,
            f"near must be two numbers lat,lon (latitude first), got {len(parts)} "
            f"value{'s' if len(parts) != 1 else ''} in {shown(near)}",
        )
    lat = _number(parts[0], "near latitude")
    lon = _number(parts[1], "near longitude")
    if not -90.0 <= lat <= 90.0:
        raise Error(
            INVALID,
            f"near latitude must be between -90 and 90, got {num(lat)} "
            "(near is lat,lon: latitude first)",
        )
    if not -180.0 <= lon <= 180.0:
        raise Error(INVALID, f"near longitude must be between -180 and 180, got {num(lon)}")
    if radius_m is None:
        raise Error(INVALID, "radius_m (metres) is required with near")
    radius = _number(radius_m, "radius_m")
    if not 0.0 < radius <= MAX_RADIUS_M:
        raise Error(
            INVALID,
            f"radius_m must be more than 0 and at most {MAX_RADIUS_M} metres (half the "
            f"earth's circumference), got {shown(radius_m.strip())}",
        )
    return Circle(lat, lon, radius)


def _number(text: str, name: str) -> float:
    stripped = text.strip()
    try:
        number = float(stripped)
    except ValueError:
        number = None
    # float() also takes digits grouped with "_", which no other parser of a URL's numbers does.
    if number is None or "_" in stripped:
        raise Error(INVALID, f"{name} must be a number, got {shown(stripped)}")
    if not math.isfinite(number):
        raise Error(INVALID, f"{name} must be a finite number, got {shown(stripped)}")
    return number


def num(value: float) -> str:
    """A number as the caller would have written it: 95, not 95.0; every digit, unlike :g."""
    text = repr(value)
    return text.removesuffix(".0")


def shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
