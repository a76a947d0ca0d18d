"""Track simplification: fewer points for a device's track, its shape kept. Pure, standard library.

- `douglas_peucker(points, tolerance_m)`: the indexes of the points kept, such that no dropped
  point is farther than `tolerance_m` metres from the segment between the kept points on either
  side of it. Simplifying the points kept keeps them all.
- `most_significant(points, n)`: the indexes of the `n` points that matter most, ranked by
  Douglas-Peucker: the first and the last, then, one at a time, the point farthest from the
  segment of kept points that spans it. The points kept for `n` are among those kept for `n + 1`.

Points are `(lat, lon)` in degrees, the order of a Location's fields; indexes come back ascending,
the first and last always among them.

What is promised. A dropped point is within the tolerance, on geo's sphere (R = 6,371,008.8 m),
of the kept segment spanning it drawn straight in latitude and longitude. Longitudes are unwrapped
along the track, so a track may cross the antimeridian. Distances are to the segment, not to its
line: a bus that turned back past a kept point is measured to the nearer end.

How. Each segment is measured on an equirectangular projection of its own, centred on its mid
latitude: x = R cos(mid) (lon - lon_a), y = R (lat - lat_a). North-south distances are the
sphere's; east-west ones are measured at cos(mid) where the sphere has cos(lat). A point that may
be dropped is within the tolerance of the segment, so its latitude is within the segment's
latitudes widened by the tolerance, and the tolerance is lowered by cos(mid) / (the greatest
cos(lat) there): no point near the segment is then understated (the path from it to the segment,
straight in latitude and longitude, is at most its measure times that ratio long, and the great
circle is shorter still). For a segment of length L that ratio is 1 - tan|lat| L / (2R) or so:
1 - 1.4e-4 for 1 km at 60 degrees, 0.7 for 5,500 km from 25 to 75 degrees north. A projection per
segment costs two cosines per segment and nothing per point; one projection for a whole track
would be off by tan|lat| times the north-south distance from its centre over R (1.4 % 50 km north
or south of it at 60 degrees): fine for a city, not for a long haul.

The great circle between two kept points (or the straight line of a Web Mercator map) is not that
segment: it strays from it by up to L^2 tan|lat| / (8R), 0.2 mm for L = 100 m, 2 cm for 1 km, 2 m
for 10 km at 45 degrees (nothing along a meridian or the equator). A caller that measures to
great circles and keeps segments of many km should allow that much. Not for polar tracks, where
that grows without bound.

Douglas-Peucker here splits a segment at the point farthest from its line, as first published,
when that point is beyond the tolerance (then so is its distance to the segment); a segment whose
line is near all its points is then measured to the segment itself, and split at the farthest
point if one is beyond the tolerance (a bus that turned back past an end). most_significant ranks
by the distance to the segment throughout (and, among equals, splits the segment of most points
first: a bus standing still keeps evenly spread fixes). Among points equally far out (within
rounding), both split at the one nearest the segment's middle: a zig-zag, all of whose corners
are as far out, then costs n log n rather than n^2.

Cost. Segments wait on an explicit stack (or heap), never in recursion, so any number of points
will do. Each segment costs a few passes of C code over its points (a comprehension, max, index);
a long one is searched through bounding boxes of its points by index instead, the box of greatest
bound first, so that it costs a few boxes and blocks rather than all its points. For 259,200
points (a bus in a city for three days, a fix a second, GPS noise of 3 m), on one core of a 2-core
AMD EPYC container: douglas_peucker takes 0.32 s at 25 m, 0.42 s at 10 m, 0.91 s at 5 m (58,800
points kept: that is the noise); most_significant 0.16 s for 100 points, 0.52 s for 10,000, 1.4 s
for 100,000, 2.0 s for all but one. About 0.12 s of each is reading the points and building the
boxes. Douglas-Peucker is O(n log n) for a track that wanders or zig-zags, and O(n^2) at worst
(a track whose farthest point is always next to an end: one that turns back on itself a little
shorter each time, along one line; or a sawtooth along a straight line, 50,000 points in 19 s).
Callers that simplify long tracks on a server run it off the event loop.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from heapq import heappop, heappush
from itertools import compress
from math import cos, isfinite, sqrt
from operator import itemgetter

from trackstore.errors import INVALID, Error
from trackstore.geo import EARTH_RADIUS_M

_M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0  # metres per degree along a meridian
_RAD = math.pi / 180.0
_HALF_RAD = math.pi / 360.0
_LAT = itemgetter(0)
_LON = itemgetter(1)
# Points per box of the lowest level of boxes, boxes per box of the level above, and the most
# points a segment may span for them to be looked at one by one rather than searched.
_BLOCK = 32
_FAN = 8
_DIRECT = 256
# Points this close to the farthest (relatively: a nanometre a metre) count as as far: rounding
# tells them apart, nothing else does.
_TIE = 1e-9


def douglas_peucker(points: Points, tolerance_m: float) -> list[int]:
    """The indexes of the points kept, ascending: the first and last, and enough others that no
    dropped point is farther than `tolerance_m` metres from the segment of kept points spanning
    it. Simplifying the points kept keeps them all.

    Raises Error(INVALID) unless `tolerance_m` (the API's `simplify`) is positive and finite, or
    if a point is not a position.
    """
    if isinstance(tolerance_m, bool) or not (
        isinstance(tolerance_m, int | float) and 0 < tolerance_m < math.inf
    ):
        raise Error(
            INVALID, f"simplify must be a positive number of metres, not {_shown(tolerance_m)}"
        )
    count = len(points)
    if count <= 2:
        return list(range(count))
    split = _Track(points).split
    tolerance = float(tolerance_m) / _M_PER_DEG  # in degrees of latitude, the unit of _Track
    keep = bytearray(count)
    keep[0] = keep[-1] = 1
    stack = [(0, count - 1)]
    pop, push = stack.pop, stack.append
    while stack:
        a, b = pop()
        index = split(a, b, tolerance)
        if index >= 0:
            keep[index] = 1
            if index - a > 1:
                push((a, index))
            if b - index > 1:
                push((index, b))
    return list(compress(range(count), keep))


def most_significant(points: Points, n: int) -> list[int]:
    """The indexes of the `n` most significant points, ascending (all of them if there are no more
    than `n`): the first and last, then the points Douglas-Peucker would keep first, each the one
    farthest from the segment of points already kept that spans it.

    Raises Error(INVALID) unless `n` (the API's `max_points`) is an integer of at least 2, or if
    a point is not a position.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise Error(INVALID, f"max_points must be an integer of at least 2, not {_shown(n)}")
    count = len(points)
    if n >= count:
        return list(range(count))
    farthest = _Track(points).farthest
    keep = bytearray(count)
    keep[0] = keep[-1] = 1
    index, distance2 = farthest(0, count - 1)
    # Farthest first; among equals, the segment of most points (a bus standing still: its fixes
    # spread evenly), then the one nearer the start.
    heap = [(-distance2, 1 - count, 0, index, count - 1)]
    for _ in range(n - 2):
        _, _, a, index, b = heappop(heap)
        keep[index] = 1
        if index - a > 1:
            split, distance2 = farthest(a, index)
            heappush(heap, (-distance2, a - index, a, split, index))
        if b - index > 1:
            split, distance2 = farthest(index, b)
            heappush(heap, (-distance2, index - b, index, split, b))
    return list(compress(range(count), keep))


_Box = tuple[list[float], list[float], list[float], list[float]]


@dataclass(frozen=True, slots=True)
class Columns:
    """A track as two columns of the same length, latitudes and longitudes in degrees: what a
    caller that gathers a long track keeps, at 8 bytes a coordinate where a list of tuples takes
    about 50 (so a month of fixes a second is 41 MB, not 260)."""

    lats: array[float]
    lons: array[float]

    def __len__(self) -> int:
        return len(self.lats)

    def subset(self, indexes: Sequence[int]) -> Columns:
        lats, lons = self.lats, self.lons
        return Columns(
            array("d", [lats[i] for i in indexes]), array("d", [lons[i] for i in indexes])
        )


Points = Sequence[tuple[float, float]] | Columns
_Coefficients = tuple[float, float, float, float, float, float, float]


class _Track:
    """A track's coordinates and the boxes to search them by, in degrees; distances in degrees
    of latitude (metres / _M_PER_DEG).

    Segment a-b, on its own projection, in degrees of latitude: X = kx (lon - lon_a),
    Y = lat - lat_a, from (0, 0) to (dx, dy), length2 = dx^2 + dy^2. A point's cross product with
    it, e = dx Y - dy X = dx lat - q lon - c, is its distance to the line times the length. Its
    dot product t = dx X + dy Y = s lon + dy lat - g runs from 0 to length2 abreast of the
    segment; its squared distance to the segment times length2 (its value) is e^2 plus the square
    of how far t falls outside [0, length2]. A segment of no length (a bus standing still, a loop
    closed) has no line: it takes (1, 0) for (dx, dy), length2 stays 0, and a point's value,
    e^2 + t^2, is its squared distance to the segment's end.

    Every point's e and value are worked out by one formula, however the point is reached (one
    by one, in a comprehension, in a search), so that the same points give the same answers.
    """

    __slots__ = ("boxes", "lats", "lons", "reach")

    def __init__(self, points: Points) -> None:
        self.lats, self.lons = _coordinates(points)
        self.boxes = _boxes(self.lats, self.lons) if len(self.lats) > _DIRECT + 2 else []
        # e and t lose about 1e-16 of |dx lat| + |q lon| + |c| to rounding each: less than
        # 1e-15 * reach * length in all. Searches raise their bounds by 1000 times that.
        self.reach = 1e-12 * (90.0 + max(-min(self.lons), max(self.lons)))

    def split(self, a: int, b: int, tolerance: float) -> int:
        """Where Douglas-Peucker splits segment a-b: the point farthest from its line if that
        is beyond the tolerance, else the point farthest from the segment if that is; else -1.
        Among equals, the one nearest the middle. `tolerance` in degrees of latitude."""
        lats = self.lats
        lons = self.lons
        lat_a = lats[a]
        lon_a = lons[a]
        lat_b = lats[b]
        lon_b = lons[b]
        kx = cos((lat_a + lat_b) * _HALF_RAD)
        # East-west distances are measured at the mid latitude, where the sphere has them
        # shrink or grow as cos(lat): a point that may be dropped is within the tolerance of the
        # segment, its latitude from low to high below, and measured against the tolerance
        # times cos(mid) / (the greatest cos(lat) there), it is never understated.
        if lat_a < lat_b:
            low = lat_a - tolerance
            high = lat_b + tolerance
        else:
            low = lat_b - tolerance
            high = lat_a + tolerance
        widest = cos(low * _RAD) if low > 0.0 else cos(high * _RAD) if high < 0.0 else 1.0
        scaled = tolerance * kx / widest
        tolerance2 = scaled * scaled
        dx = kx * (lon_b - lon_a)
        dy = lat_b - lat_a
        length2 = dx * dx + dy * dy
        lo = a + 1
        if length2 == 0.0:
            return self._beyond(a, b, kx, 1.0, 0.0, 0.0, tolerance2)
        q = dy * kx
        c = dx * lat_a - q * lon_a
        if b - lo == 1:
            top = abs(dx * lats[lo] - q * lons[lo] - c)  # as _crosses, then c off
            index = lo
        elif b - lo <= _DIRECT:
            top, index = _farthest_across(
                _crosses(lats[lo:b], lons[lo:b], dx, q), c, (a + b) // 2 - lo
            )
            index += lo
        else:
            top, index = self._search(lo, b, (dx, q, c, 0.0, 0.0, 0.0, 0.0), True, length2)
        if top * top > tolerance2 * length2:
            return index
        return self._beyond(a, b, kx, dx, dy, length2, tolerance2)

    def _beyond(
        self, a: int, b: int, kx: float, dx: float, dy: float, length2: float, tolerance2: float
    ) -> int:
        """The point between a and b farthest from the segment, if it is farther than the
        tolerance (`tolerance2`, squared); else -1. (dx, dy, length2): (1, 0, 0) for a segment of
        no length."""
        value, index = self._farthest_value(a, b, kx, dx, dy, length2)
        return index if value > tolerance2 * (length2 or 1.0) else -1

    def farthest(self, a: int, b: int) -> tuple[int, float]:
        """The point strictly between a and b farthest from the segment a-b (of equals, the one
        nearest the middle), and its squared distance."""
        lats = self.lats
        lons = self.lons
        lat_a = lats[a]
        lon_a = lons[a]
        lat_b = lats[b]
        lon_b = lons[b]
        kx = cos((lat_a + lat_b) * _HALF_RAD)
        dx = kx * (lon_b - lon_a)
        dy = lat_b - lat_a
        length2 = dx * dx + dy * dy
        if length2 == 0.0:
            dx, dy = 1.0, 0.0
        value, index = self._farthest_value(a, b, kx, dx, dy, length2)
        if value == 0.0:
            return (a + b) // 2, 0.0
        return index, value / (length2 or 1.0)

    def _farthest_value(
        self, a: int, b: int, kx: float, dx: float, dy: float, length2: float
    ) -> tuple[float, int]:
        """The greatest value between a and b, and the point with it (see _middlemost)."""
        lats = self.lats
        lons = self.lons
        lat_a = lats[a]
        lon_a = lons[a]
        q = dy * kx
        c = dx * lat_a - q * lon_a
        s = dx * kx
        g = s * lon_a + dy * lat_a
        h = g + length2
        lo = a + 1
        if b - lo == 1:
            lat = lats[lo]
            lon = lons[lo]
            # _values' formula, written out
            value = (e := dx * lat - q * lon - c) * e + (
                (g - t) * (g - t)
                if (t := s * lon + dy * lat) < g
                else (t - h) * (t - h)
                if t > h
                else 0.0
            )
            return value, lo
        if b - lo <= _DIRECT:
            values = _values(lats[lo:b], lons[lo:b], dx, q, c, s, dy, g, h)
            value = max(values)
            return value, lo + _middlemost(values, value, (a + b) // 2 - lo)
        return self._search(lo, b, (dx, q, c, s, dy, g, h), False, length2 or 1.0)

    def _search(
        self, lo: int, hi: int, coefficients: _Coefficients, line: bool, length2: float
    ) -> tuple[float, int]:
        """Over the points lo <= i < hi: the greatest |e| if `line`, else the greatest value,
        and the point with it (see _middlemost). Found box by box, greatest bound first,
        skipping every box that cannot beat the best point found so far, nor come within _TIE
        of it; then the blocks that came that near are looked at again for the point chosen."""
        lats = self.lats
        lons = self.lons
        boxes = self.boxes
        p, q, c, s, r, g, h = coefficients
        # A box's bound: the greatest |e| at its corners; for a value, that squared plus the
        # square of t's greatest overshoot, all under a square root. e and t are linear, so the
        # corners that give them are chosen once, by the coefficients' signs: which of each
        # box's least (0, 2) or greatest (1, 3) latitude and longitude to take. Bounds are
        # raised by `slack`, so that rounding never makes a point beat its box's bound.
        e_lat = 1 if p > 0.0 else 0  # the corner of greatest e; 1 - e_lat, 5 - e_lon: least
        e_lon = 2 if q > 0.0 else 3
        t_lat = 1 if r > 0.0 else 0  # the corner of greatest t
        t_lon = 3 if s > 0.0 else 2
        slack = self.reach * sqrt(length2)
        best = -1.0  # the greatest |e| or value so far
        bar = -1.0  # what a bound must reach to be looked into: best (or its root), less _TIE
        near: list[tuple[int, int]] = []  # the blocks whose greatest came within _TIE of best
        heap: list[tuple[float, int, int, int]] = []

        def measured(start: int, stop: int) -> list[float]:
            if line:
                return [abs(x - c) for x in _crosses(lats[start:stop], lons[start:stop], p, q)]
            return _values(lats[start:stop], lons[start:stop], p, q, c, s, r, g, h)

        def exact(start: int, stop: int) -> None:
            nonlocal best, bar
            if start >= stop:
                return
            if line:
                crosses = _crosses(lats[start:stop], lons[start:stop], p, q)
                top = max(max(crosses) - c, c - min(crosses))
            else:
                top = max(_values(lats[start:stop], lons[start:stop], p, q, c, s, r, g, h))
            if top >= best - best * _TIE:
                near.append((start, stop))
            if top > best:
                best = top
                bar = (top if line else sqrt(top)) * (1.0 - _TIE)

        def bounded(level: int, first: int, last: int) -> None:
            """Boxes first <= j < last of a level onto the heap, unless they cannot win."""
            box = boxes[level]
            size = _BLOCK * _FAN**level
            e_highs = [
                p * lat - q * lon - c
                for lat, lon in zip(box[e_lat][first:last], box[e_lon][first:last], strict=True)
            ]
            e_lows = [
                c - p * lat + q * lon
                for lat, lon in zip(
                    box[1 - e_lat][first:last], box[5 - e_lon][first:last], strict=True
                )
            ]
            if line:
                bounds = [max(high, low) + slack for high, low in zip(e_highs, e_lows, strict=True)]
            else:
                t_highs = [
                    s * lon + r * lat
                    for lat, lon in zip(box[t_lat][first:last], box[t_lon][first:last], strict=True)
                ]
                t_lows = [
                    s * lon + r * lat
                    for lat, lon in zip(
                        box[1 - t_lat][first:last], box[5 - t_lon][first:last], strict=True
                    )
                ]
                bounds = [
                    sqrt(max(e_high, e_low) ** 2 + max(g - t_low, t_high - h, 0.0) ** 2) + slack
                    for e_high, e_low, t_high, t_low in zip(
                        e_highs, e_lows, t_highs, t_lows, strict=True
                    )
                ]
            for j, bound in enumerate(bounds, first):
                if bound >= bar:
                    heappush(heap, (-bound, j * size, level, j))

        # The whole blocks inside [lo, hi), covered by as few boxes as can be; the points
        # before and after them are looked at first.
        first = -(-lo // _BLOCK)
        last = hi // _BLOCK
        exact(lo, min(first * _BLOCK, hi))
        exact(max(last * _BLOCK, lo), hi)
        level = 0
        while first < last:
            up_first = -(-first // _FAN)
            up_last = last // _FAN
            if up_first >= up_last or level + 1 == len(boxes):
                bounded(level, first, last)
                break
            bounded(level, first, up_first * _FAN)
            bounded(level, up_last * _FAN, last)
            first, last, level = up_first, up_last, level + 1
        while heap:
            negative, start, level, j = heappop(heap)
            # Boxes come off by bound: the first that cannot come near the best point ends it.
            if -negative < bar:
                break
            if level == 0:
                exact(start, start + _BLOCK)
            else:
                bounded(level - 1, j * _FAN, min(j * _FAN + _FAN, len(boxes[level - 1][0])))
        floor = best - best * _TIE
        middle = (lo - 1 + hi) // 2
        index = -1
        for start, stop in near:
            values = measured(start, stop)
            if max(values) >= floor:
                k = start + _middlemost(values, best, middle - start)
                if index < 0 or (abs(k - middle), k) < (abs(index - middle), index):
                    index = k
        return best, index


def _coordinates(points: Points) -> tuple[Sequence[float], Sequence[float]]:
    """Latitudes and longitudes as floats, longitudes unwrapped along the track: each within 180
    degrees of the one before, by adding whole turns (exactly, so that a subset of the points
    with the same first point unwraps to the very same numbers). Columns stay arrays (compact;
    about 10 % slower to search than lists)."""
    lats: Sequence[float]
    lons: Sequence[float]
    if isinstance(points, Columns):
        lats, lons = points.lats, points.lons
    else:
        lats = list(map(float, map(_LAT, points)))
        lons = list(map(float, map(_LON, points)))
    # A sum of finite coordinates is finite; one that is not finite makes the sum so.
    if not (isfinite(sum(lats)) and isfinite(sum(lons))):
        raise Error(INVALID, "a track's coordinates must be finite numbers")
    if not (min(lats) >= -90.0 and max(lats) <= 90.0):
        raise Error(INVALID, "a track's latitudes must be between -90 and 90")
    if max(lons) - min(lons) > 180.0:
        unwrapped = array("d")
        turns = 0.0
        previous = lons[0]
        for lon in lons:
            step = lon - previous
            if step > 180.0:
                turns -= 360.0
            elif step < -180.0:
                turns += 360.0
            previous = lon
            unwrapped.append(lon + turns)
        lons = unwrapped
    return lats, lons


def _boxes(lats: Sequence[float], lons: Sequence[float]) -> list[_Box]:
    """Bounding boxes of the points by index, per level: level 0 has one per _BLOCK points, each
    level above one per _FAN boxes of the level below. Each level is the boxes' least and
    greatest latitudes, least and greatest longitudes."""
    boxes: list[_Box] = []
    size = _BLOCK
    level = (lats, lats, lons, lons)
    while True:
        starts = range(0, len(level[0]), size)
        low_lats, high_lats, low_lons, high_lons = level
        level = (
            [min(low_lats[i : i + size]) for i in starts],
            [max(high_lats[i : i + size]) for i in starts],
            [min(low_lons[i : i + size]) for i in starts],
            [max(high_lons[i : i + size]) for i in starts],
        )
        boxes.append(level)
        if len(level[0]) <= _FAN:
            return boxes
        size = _FAN


def _crosses(lats: Sequence[float], lons: Sequence[float], p: float, q: float) -> list[float]:
    """Each point's e + c (see _Track)."""
    return [p * lat - q * lon for lat, lon in zip(lats, lons, strict=True)]


def _middlemost(values: list[float], top: float, middle: int) -> int:
    """Among the values within _TIE of `top` (the greatest of all, perhaps of more values than
    these), the index nearest `middle`; the first of two as near. Splitting a segment at the
    first of many equal points (a zig-zag, every corner as far out) would peel one point off at
    a time, n segments of n points: 160 s for 50,000 points, where splitting near the middle
    halves them, n log n."""
    floor = top - top * _TIE
    if top in values:  # the greatest is here: alone near it, most often
        first = values.index(top)
        rest = values[:first] + values[first + 1 :]
        if not rest or max(rest) < floor:
            return first
    return min(
        (k for k, value in enumerate(values) if value >= floor),
        key=lambda k: (abs(k - middle), k),
    )


def _farthest_across(crosses: list[float], c: float, middle: int) -> tuple[float, int]:
    """The greatest |e| of the points of _crosses, and the point with it (see _middlemost)."""
    high = max(crosses)
    low = min(crosses)
    top, extreme = (high - c, high) if high - c >= c - low else (c - low, low)
    first = crosses.index(extreme)
    rest = crosses[:first] + crosses[first + 1 :]
    floor = top - top * _TIE
    if not rest or (max(rest) - c < floor and c - min(rest) < floor):
        return top, first
    return top, _middlemost([abs(x - c) for x in crosses], top, middle)


def _values(
    lats: Sequence[float],
    lons: Sequence[float],
    p: float,
    q: float,
    c: float,
    s: float,
    r: float,
    g: float,
    h: float,
) -> list[float]:
    """Each point's value: its squared distance to the segment times length2 (see _Track)."""
    return [
        (e := p * lat - q * lon - c) * e
        + (
            (g - t) * (g - t)
            if (t := s * lon + r * lat) < g
            else (t - h) * (t - h)
            if t > h
            else 0.0
        )
        for lat, lon in zip(lats, lons, strict=True)
    ]


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."
