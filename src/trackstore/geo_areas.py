"""Polygons for the fleet's area queries: GeoJSON Polygons and MultiPolygons (holes, antimeridian
crossings) parsed and tested point by point, with a ray-casting grid once a polygon is asked often
enough to pay for one. The conventions are trackstore.geo's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from math import floor

from trackstore.errors import INVALID, Error
from trackstore.geo import BBox, num, shown

# As AWS Location's FilterGeometry: every position given counts, closing ones and holes' too.
MAX_AREA_VERTICES = 1000
# Edges a ring's latitude bands may hold in all, per edge: a long edge is listed in every band it
# crosses, so a ring of long edges gets fewer, taller bands instead of quadratic memory.
_BAND_BUDGET = 8

# A polygon's grid: cells per side, and how near (degrees) an edge must come to a cell for the
# cell to be checked point by point. The margin dwarfs rounding (1e-13 degrees) and is far
# below any cell of a polygon one would draw.
_GRID_CELLS = 64
_GRID_MARGIN = 1e-9

# What a ring says of a point.
_OUTSIDE = 0
_INSIDE = 1
_ON_EDGE = 2
# What a grid cell says of the points in it.
_OUT = 0
_IN = 1
_CHECK = 2
_CHECKS = bytes([_CHECK]) * (_GRID_CELLS + 1)
_CHECK_ALL = _CHECKS * (_GRID_CELLS + 1)
_GRID_AFTER = 512

# -- polygons ------------------------------------------------------------------------------------

_Edge = tuple[float, float, float, float]


class _Ring:
    """A ring's edges as (x1, y1, x2, y2) with y1 <= y2 (x1 <= x2 when level), bucketed by
    latitude band, so that a point's ray meets only the edges of its band."""

    __slots__ = ("bands", "edges", "last", "max_x", "max_y", "min_x", "min_y", "scale")

    def __init__(self, xs: Sequence[float], ys: Sequence[float]) -> None:
        edges: list[_Edge] = []
        for i in range(len(xs) - 1):
            x1, y1, x2, y2 = xs[i], ys[i], xs[i + 1], ys[i + 1]
            if y1 > y2 or (y1 == y2 and x1 > x2):
                x1, y1, x2, y2 = x2, y2, x1, y1
            edges.append((x1, y1, x2, y2))
        self.edges = tuple(edges)
        self.min_x, self.max_x = min(xs), max(xs)
        self.min_y, self.max_y = min(ys), max(ys)
        low = self.min_y
        height = self.max_y - low
        count = len(edges) if height > 0.0 else 1
        rise = sum(y2 - y1 for _, y1, _, y2 in edges)
        if rise > 0.0:
            # An edge is in about rise * count / height bands beyond its own: keep the total
            # within budget.
            count = max(1, min(count, int((_BAND_BUDGET - 1) * len(edges) * height / rise)))
        scale = count / height if count > 1 else 0.0
        last = count - 1
        bands: list[list[_Edge]] = [[] for _ in range(count)]
        for edge in edges:
            # side()'s own arithmetic, so an edge is in the band of every y it spans.
            first = min(int((edge[1] - low) * scale), last)
            final = min(int((edge[3] - low) * scale), last)
            for band in range(first, final + 1):
                bands[band].append(edge)
        self.bands = tuple(tuple(band) for band in bands)
        self.scale = scale
        self.last = last

    def side(self, x: float, y: float) -> int:
        """_INSIDE, _OUTSIDE or _ON_EDGE, by even-odd ray casting towards +x."""
        if y < self.min_y or y > self.max_y or x < self.min_x or x > self.max_x:
            return _OUTSIDE
        band = int((y - self.min_y) * self.scale)
        inside = False
        for x1, y1, x2, y2 in self.bands[band if band < self.last else self.last]:
            if y < y1 or y > y2:
                continue
            if y < y2:
                # Half-open in y (y1 <= y < y2), so a ray through a vertex counts it once. The
                # cross product's sign says which side of the edge the point is on.
                c = (x2 - x1) * (y - y1) - (x - x1) * (y2 - y1)
                if c > 0.0:
                    inside = not inside
                elif c == 0.0:
                    return _ON_EDGE
            elif y1 == y2:
                if x1 <= x <= x2:
                    return _ON_EDGE
            elif x == x2:
                return _ON_EDGE
        return _INSIDE if inside else _OUTSIDE

    def crossings(self, y: float) -> list[float]:
        """Where the line at y crosses the ring, sorted; by side()'s half-open rule."""
        if y < self.min_y or y > self.max_y:
            return []
        band = int((y - self.min_y) * self.scale)
        return sorted(
            x1 + (y - y1) * (x2 - x1) / (y2 - y1)
            for x1, y1, x2, y2 in self.bands[band if band < self.last else self.last]
            if y1 <= y < y2
        )


class _Polygon:
    """An exterior ring and its holes in one continuous longitude frame, min_x in [-180, 180)
    and max_x - min_x <= 360: a point is tried at lon, and at lon +- 360 where that falls in.

    A grid over its box answers most points with one lookup: a cell no edge comes near is
    wholly inside or wholly outside, as its centre is; only cells an edge may touch (and the
    last row and column, where x or y is the box's maximum) cast a ray. The grid costs about
    as much as _GRID_AFTER rays, so it is built only once that many have been cast: a request
    whose prefilter leaves a few points pays for no grid."""

    __slots__ = (
        "_cells",
        "_rays",
        "exterior",
        "grid",
        "holes",
        "max_x",
        "max_y",
        "min_x",
        "min_y",
        "stride",
        "x_scale",
        "y_scale",
    )

    def __init__(self, exterior: _Ring, holes: Sequence[_Ring]) -> None:
        self.exterior = exterior
        self.holes = tuple(holes)
        self.min_x, self.max_x = exterior.min_x, exterior.max_x
        self.min_y, self.max_y = exterior.min_y, exterior.max_y
        width = self.max_x - self.min_x
        height = self.max_y - self.min_y
        # A polygon without area (all on one meridian or parallel) holds only its edges.
        cells = _GRID_CELLS if width > 0.0 and height > 0.0 else 0
        self.stride = cells + 1
        self.x_scale = cells / width if cells else 0.0
        self.y_scale = cells / height if cells else 0.0
        self._cells = cells
        self._rays = 0
        self.grid = _CHECK_ALL[: self.stride * self.stride]  # every point casts a ray, for now

    def exact(self, x: float, y: float) -> bool:
        self._rays += 1
        if self._rays == _GRID_AFTER:
            self.grid = self._grid(self._cells)
        if self.exterior.side(x, y) == _OUTSIDE:
            return False
        return all(hole.side(x, y) != _INSIDE for hole in self.holes)

    def _grid(self, cells: int) -> bytes:
        # The last row and column stay _CHECK: only a point on the box's north or east edge
        # falls in them.
        grid = bytearray([_CHECK]) * (self.stride * self.stride)
        if cells:
            self._classify(grid, cells)
            self._mark_edges(grid, cells)
        return bytes(grid)

    def _classify(self, grid: bytearray, cells: int) -> None:
        """Each cell as its centre lies, row by row: between a ring's crossings of the row's
        centre line, pairwise, is inside that ring."""
        west = self.min_x
        width = (self.max_x - west) / cells
        height = (self.max_y - self.min_y) / cells
        for row in range(cells):
            y = self.min_y + (row + 0.5) * height
            start = row * self.stride
            grid[start : start + cells] = bytes(cells)
            for ring, fill in ((self.exterior, _IN), *((hole, _OUT) for hole in self.holes)):
                crossed = ring.crossings(y)
                for enter, leave in zip(crossed[::2], crossed[1::2], strict=True):
                    # The first column whose centre is east of each crossing. A centre near a
                    # crossing is in a cell _mark_edges marks, so rounding here cannot matter.
                    first = max(0, min(cells, floor((enter - west) / width - 0.5) + 1))
                    last = max(0, min(cells, floor((leave - west) / width - 0.5) + 1))
                    grid[start + first : start + last] = bytes([fill]) * (last - first)

    def _mark_edges(self, grid: bytearray, cells: int) -> None:
        """_CHECK in every cell an edge comes within _GRID_MARGIN of, found with contains()'s
        own arithmetic for a cell (monotonic in x and y): a point whose cell is not marked has
        no edge near it, so it lies as its cell's centre does."""
        west, south = self.min_x, self.min_y
        x_scale, y_scale = self.x_scale, self.y_scale
        height = (self.max_y - south) / cells
        margin = _GRID_MARGIN
        for ring in (self.exterior, *self.holes):
            for x1, y1, x2, y2 in ring.edges:
                slope = (x2 - x1) / (y2 - y1) if y2 > y1 else 0.0
                first_row = max(0, int((y1 - margin - south) * y_scale))
                last_row = min(cells, int((y2 + margin - south) * y_scale))
                for row in range(first_row, last_row + 1):
                    if slope and first_row < last_row:
                        # The edge's x-range over this row, the row widened by the margin.
                        low = max(y1, south + row * height - margin)
                        high = min(y2, south + (row + 1) * height + margin)
                        xa, xb = x1 + (low - y1) * slope, x1 + (high - y1) * slope
                        if xa > xb:
                            xa, xb = xb, xa
                    else:
                        xa, xb = min(x1, x2), max(x1, x2)
                    first = max(0, int((xa - margin - west) * x_scale))
                    last = min(cells, int((xb + margin - west) * x_scale))
                    start = row * self.stride
                    grid[start + first : start + last + 1] = _CHECKS[: last - first + 1]

    def bounds(self) -> list[BBox]:
        west, east = self.min_x, self.max_x
        if east - west >= 360.0:
            return [BBox(-180.0, self.min_y, 180.0, self.max_y)]
        if east > 180.0:
            return [
                BBox(west, self.min_y, 180.0, self.max_y),
                BBox(-180.0, self.min_y, east - 360.0, self.max_y),
            ]
        return [BBox(west, self.min_y, east, self.max_y)]


class Area:
    """A prepared Polygon or MultiPolygon (made by parse_area): the union of its polygons, each
    its exterior ring less its holes, edges included (see the module's conventions)."""

    __slots__ = ("_max_lat", "_min_lat", "_polygons", "vertex_count")

    def __init__(self, polygons: Sequence[_Polygon], vertex_count: int) -> None:
        self._polygons = tuple(polygons)
        self._min_lat = min(polygon.min_y for polygon in self._polygons)
        self._max_lat = max(polygon.max_y for polygon in self._polygons)
        self.vertex_count = vertex_count  # as MAX_AREA_VERTICES counts them

    def __repr__(self) -> str:
        return f"Area({len(self._polygons)} polygons, {self.vertex_count} vertices)"

    def contains(self, lat: float, lon: float) -> bool:
        if lat < self._min_lat or lat > self._max_lat:
            return False
        for polygon in self._polygons:
            if lat < polygon.min_y or lat > polygon.max_y:
                continue
            west = polygon.min_x
            # The lowest of lon - 360, lon, lon + 360 not west of the polygon: lon - 360 only for
            # lon 180 against a polygon starting at -180.
            x = lon + 360.0 if lon < west else lon - 360.0 if lon - 360.0 >= west else lon
            while x <= polygon.max_x:
                state = polygon.grid[
                    int((lat - polygon.min_y) * polygon.y_scale) * polygon.stride
                    + int((x - west) * polygon.x_scale)
                ]
                if state == _IN or (state == _CHECK and polygon.exact(x, lat)):
                    return True
                x += 360.0
        return False

    def bounds(self) -> list[BBox]:
        """Boxes holding the whole area, one or two per polygon (two where one crosses the
        antimeridian; every box has min_lon <= max_lon), for a cheap prefilter."""
        return [box for polygon in self._polygons for box in polygon.bounds()]


# -- parsing GeoJSON -----------------------------------------------------------------------------

_GEOMETRY_TYPES = ("Polygon", "MultiPolygon")


def parse_area(geojson: object) -> Area:
    """A GeoJSON Polygon or MultiPolygon, or a Feature of one, as decoded from JSON.

    Each ring is at least 4 positions, closed (its last position repeats its first), each
    position `[lon, lat]` or `[lon, lat, alt]` (altitude ignored). At most MAX_AREA_VERTICES
    vertices in all, the holes' counted too; a ring's closing position (its first, repeated) is
    not counted again.
    Rings after a polygon's first are holes. Winding order is not checked (RFC 7946 asks
    parsers not to reject on it). Edges longer than 180 degrees of longitude cross the
    antimeridian (see the module's conventions); a ring that thereby goes all the way round the
    earth (around a pole) is refused, since which side is inside cannot be told.
    """
    geometry, where = _geometry(geojson)
    coordinates = geometry.get("coordinates")
    path = f"{where}coordinates"
    if geometry["type"] == "Polygon":
        polygons = [(_list(coordinates, path, "a list of rings"), path)]
    else:
        items = _list(coordinates, path, "a list of polygons")
        if not items:
            raise Error(INVALID, f"area {path} has no polygons: give at least one")
        polygons = [
            (_list(item, f"{path}[{i}]", "a list of rings"), f"{path}[{i}]")
            for i, item in enumerate(items)
        ]
    rings = [
        [
            (_list(ring, f"{at}[{j}]", "a list of positions"), f"{at}[{j}]")
            for j, ring in enumerate(polygon)
        ]
        for polygon, at in polygons
    ]
    # A ring's closing position repeats its first: a vertex once, as people count them.
    total = sum(max(len(ring) - 1, 0) for polygon in rings for ring, _ in polygon)
    if total > MAX_AREA_VERTICES:
        raise Error(
            INVALID,
            f"area has {total} vertices, more than the {MAX_AREA_VERTICES} allowed (the holes' "
            "count too; a ring's closing position does not): simplify it",
        )
    prepared = [_polygon(own, at) for own, (_, at) in zip(rings, polygons, strict=True)]
    return Area(prepared, total)


def _geometry(geojson: object) -> tuple[dict[str, object], str]:
    """The geometry and the path to it, for messages."""
    expected = "a GeoJSON Polygon or MultiPolygon, or a Feature of one"
    if not isinstance(geojson, dict):
        raise Error(INVALID, f"area must be {expected}, got {_kind(geojson)}")
    kind = geojson.get("type")
    if kind == "Feature":
        geometry = geojson.get("geometry")
        if not isinstance(geometry, dict):
            raise Error(
                INVALID,
                f"area Feature's geometry must be a Polygon or MultiPolygon, got {_kind(geometry)}",
            )
        if geometry.get("type") not in _GEOMETRY_TYPES:
            raise Error(
                INVALID,
                "area Feature's geometry must be a Polygon or MultiPolygon, got type "
                f"{shown(geometry.get('type'))}",
            )
        return geometry, "geometry."
    if kind is None:
        raise Error(INVALID, f'area must be {expected}: its "type" member is missing')
    if kind not in _GEOMETRY_TYPES:
        raise Error(INVALID, f"area must be {expected}, got type {shown(kind)}")
    return geojson, ""


def _polygon(rings: list[tuple[list[object], str]], path: str) -> _Polygon:
    if not rings:
        raise Error(INVALID, f"area {path} has no rings: give at least its exterior ring")
    frames = [_unwrapped(ring, where) for ring, where in rings]
    (lons, lats, turns), *holes = frames
    low = min(lon + 360.0 * turn for lon, turn in zip(lons, turns, strict=True))
    high = max(lon + 360.0 * turn for lon, turn in zip(lons, turns, strict=True))
    # Move the exterior so that its west end is in [-180, 180), which contains() relies on.
    shift = -floor((low + 180.0) / 360.0)
    middle = (low + high) / 2.0
    exterior = _ring(lons, lats, [turn + shift for turn in turns])
    prepared = []
    for hole_lons, hole_lats, hole_turns in holes:
        # A hole unwrapped from its own first position may sit a turn away from its exterior.
        xs = [lon + 360.0 * turn for lon, turn in zip(hole_lons, hole_turns, strict=True)]
        offset = round((middle - (min(xs) + max(xs)) / 2.0) / 360.0) + shift
        prepared.append(_ring(hole_lons, hole_lats, [turn + offset for turn in hole_turns]))
    return _Polygon(exterior, prepared)


def _ring(lons: list[float], lats: list[float], turns: list[int]) -> _Ring:
    # One addition per coordinate, so a point at a vertex's longitude meets it exactly.
    return _Ring([lon + 360.0 * turn for lon, turn in zip(lons, turns, strict=True)], lats)


def _unwrapped(ring: list[object], path: str) -> tuple[list[float], list[float], list[int]]:
    """The ring's longitudes, latitudes and, per position, the turns (multiples of 360) that
    make its longitudes continuous."""
    if len(ring) < 4:
        raise Error(
            INVALID,
            f"area {path} must have at least 4 positions (a closed ring repeats its first "
            f"position last), got {len(ring)}",
        )
    lons: list[float] = []
    lats: list[float] = []
    for k, position in enumerate(ring):
        lon, lat = _position(position, f"{path}[{k}]")
        lons.append(lon)
        lats.append(lat)
    if lons[0] != lons[-1] or lats[0] != lats[-1]:
        raise Error(
            INVALID,
            f"area {path} is not closed: its last position [{num(lons[-1])}, "
            f"{num(lats[-1])}] must repeat its first [{num(lons[0])}, {num(lats[0])}]",
        )
    turns = [0]
    turn = 0
    for previous, lon in pairwise(lons):
        step = lon - previous
        if step > 180.0 and step != 360.0:
            turn -= 1
        elif step < -180.0 and step != -360.0:
            turn += 1
        turns.append(turn)
    if turn != 0:
        raise Error(
            INVALID,
            f"area {path} goes all the way round the earth (edges longer than 180 degrees of "
            "longitude cross the antimeridian), so its inside cannot be told; give a polar cap "
            "as a ring from -180 to 180 reaching the pole, e.g. "
            "[[-180,80],[180,80],[180,90],[-180,90],[-180,80]]",
        )
    xs = [lon + 360.0 * turn for lon, turn in zip(lons, turns, strict=True)]
    if max(xs) - min(xs) > 360.0:
        raise Error(
            INVALID,
            f"area {path} spans more than 360 degrees of longitude (edges longer than 180 "
            "degrees cross the antimeridian), so it overlaps itself",
        )
    return lons, lats, turns


def _position(value: object, path: str) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or not 2 <= len(value) <= 3:
        raise Error(
            INVALID,
            f"area {path} must be a position [lon, lat] or [lon, lat, alt], got {shown(value)}",
        )
    lon = _coordinate(value[0], f"{path}[0]", "longitude")
    lat = _coordinate(value[1], f"{path}[1]", "latitude")
    if len(value) == 3:
        _coordinate(value[2], f"{path}[2]", "altitude")
    if not -180.0 <= lon <= 180.0:
        raise Error(
            INVALID,
            f"area {path}: longitude must be between -180 and 180, got {num(lon)} (positions are "
            "[lon, lat]: longitude first)",
        )
    if not -90.0 <= lat <= 90.0:
        raise Error(
            INVALID,
            f"area {path}: latitude must be between -90 and 90, got {num(lat)} (positions are "
            "[lon, lat]: longitude first)",
        )
    return lon, lat


def _coordinate(value: object, path: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Error(INVALID, f"area {path}: {name} must be a number, got {shown(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any double
        number = math.inf
    if not math.isfinite(number):
        raise Error(INVALID, f"area {path}: {name} must be a finite number, got {shown(value)}")
    return number


def _list(value: object, path: str, expected: str) -> list[object]:
    if not isinstance(value, list | tuple):
        raise Error(INVALID, f"area {path} must be {expected}, got {_kind(value)}")
    return list(value)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return shown(value)
