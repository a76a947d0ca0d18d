"""The geometry of the area queries (trackstore.geo), against plain oracles written here.

- haversine_m against distances known in closed form and the spherical law of cosines.
- Boxes: edges inside, the antimeridian (minLon > maxLon), 180 and -180 as one meridian.
- Circles: contains() answers as distance_m <= radius_m, even on the rim; bounds() holds every
  point of the circle, near the poles and the antimeridian too, and not the far side of the
  earth.
- Areas: random star-shaped polygons with holes, some crossing the antimeridian, and
  MultiPolygons, against even-odd ray casting on the generator's own continuous rings; an area
  crossing the antimeridian and the same area split at 180 (the RFC 7946 way) answer alike,
  boundaries included.
- Every parse error names the parameter and what to fix.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from trackstore.errors import INVALID, Error
from trackstore.geo import (
    EARTH_RADIUS_M,
    MAX_RADIUS_M,
    BBox,
    Circle,
    haversine_m,
    parse_bbox,
    parse_near,
)
from trackstore.geo_areas import MAX_AREA_VERTICES, Area, parse_area

# database=None: no .hypothesis/ directory in the work tree; a failure prints its example.
PROPERTY = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
FEW = settings(PROPERTY, max_examples=80)

ONE_DEGREE_M = EARTH_RADIUS_M * math.pi / 180  # 111,195.08 m
HALF_CIRCUMFERENCE_M = EARTH_RADIUS_M * math.pi

longitudes = st.one_of(
    st.floats(-180, 180), st.floats(170, 180), st.floats(-180, -170), st.sampled_from([-180, 180])
)
latitudes = st.one_of(st.floats(-90, 90), st.floats(85, 90), st.floats(-90, -85))


def wrapped(lon: float) -> float:
    """A longitude in [-180, 180]."""
    return (lon + 180.0) % 360.0 - 180.0


def destination(lat: float, lon: float, bearing: float, distance_m: float) -> tuple[float, float]:
    """Where one gets going `distance_m` from (lat, lon) along the great circle at `bearing`."""
    angle = distance_m / EARTH_RADIUS_M
    phi, theta = math.radians(lat), math.radians(bearing)
    sin_phi2 = math.sin(phi) * math.cos(angle) + math.cos(phi) * math.sin(angle) * math.cos(theta)
    phi2 = math.asin(max(-1.0, min(1.0, sin_phi2)))
    lam = math.atan2(
        math.sin(theta) * math.sin(angle) * math.cos(phi),
        math.cos(angle) - math.sin(phi) * math.sin(phi2),
    )
    return math.degrees(phi2), wrapped(lon + math.degrees(lam))


def invalid(call: Any, *args: object) -> str:
    with pytest.raises(Error) as caught:
        call(*args)
    assert caught.value.code is INVALID
    return caught.value.message


# -- haversine -----------------------------------------------------------------------------------


@pytest.mark.parametrize("lon", [0.0, 45.0, -120.0, 180.0])
def test_one_degree_of_latitude_is_111_195_metres_on_every_meridian(lon: float) -> None:
    assert haversine_m(10.0, lon, 11.0, lon) == pytest.approx(111_195.08, abs=0.01)
    assert haversine_m(-0.5, lon, 0.5, lon) == pytest.approx(ONE_DEGREE_M, rel=1e-12)


def test_longitude_distances_shrink_with_the_cosine_of_latitude_and_wrap_at_180() -> None:
    assert haversine_m(0.0, 10.0, 0.0, 11.0) == pytest.approx(ONE_DEGREE_M, rel=1e-12)
    assert haversine_m(0.0, 179.5, 0.0, -179.5) == pytest.approx(ONE_DEGREE_M, rel=1e-9)
    # At 60 degrees a degree of longitude is about half as long (a little more: great circle).
    assert haversine_m(60.0, 0.0, 60.0, 1.0) == pytest.approx(ONE_DEGREE_M / 2, rel=1e-4)


def test_quarter_and_half_of_the_earth() -> None:
    assert haversine_m(0.0, 30.0, 90.0, 0.0) == pytest.approx(HALF_CIRCUMFERENCE_M / 2, rel=1e-12)
    assert haversine_m(0.0, 0.0, 0.0, 180.0) == pytest.approx(HALF_CIRCUMFERENCE_M, rel=1e-12)
    assert haversine_m(45.0, 10.0, -45.0, -170.0) == pytest.approx(HALF_CIRCUMFERENCE_M, rel=1e-9)
    assert haversine_m(12.5, -33.0, 12.5, -33.0) == 0.0


@PROPERTY
@given(lat1=latitudes, lon1=longitudes, lat2=latitudes, lon2=longitudes)
def test_haversine_agrees_with_the_law_of_cosines(
    lat1: float, lon1: float, lat2: float, lon2: float
) -> None:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    cosine = math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(
        math.radians(lon2 - lon1)
    )
    expected = EARTH_RADIUS_M * math.acos(max(-1.0, min(1.0, cosine)))
    # The law of cosines loses its digits near 0 and near the antipode.
    assume(10_000 < expected < HALF_CIRCUMFERENCE_M - 10_000)
    assert haversine_m(lat1, lon1, lat2, lon2) == pytest.approx(expected, rel=1e-7)
    assert haversine_m(lat2, lon2, lat1, lon1) == pytest.approx(expected, rel=1e-7)


# -- boxes ---------------------------------------------------------------------------------------


def test_a_bbox_holds_its_edges_and_corners_and_nothing_beyond() -> None:
    box = parse_bbox("5,45,15,55")
    assert box == BBox(5.0, 45.0, 15.0, 55.0)
    assert not box.crosses_antimeridian
    for lat, lon in [(45, 5), (55, 15), (50, 5), (45, 10), (50, 10)]:
        assert box.contains(lat, lon)
    for lat, lon in [(math.nextafter(45, 0), 10), (50, math.nextafter(15, 16)), (50, -10)]:
        assert not box.contains(lat, lon)


@pytest.mark.parametrize(
    ("lat", "lon", "inside"),
    [
        (0, 175, True),
        (0, -175, True),
        (0, 180, True),
        (0, -180, True),
        (10, 170, True),  # corner
        (-10, -170, True),
        (0, 0, False),  # the 340 degrees the other way
        (0, 169.9, False),
        (0, -169.9, False),
        (10.1, 175, False),
    ],
)
def test_a_bbox_with_min_lon_above_max_lon_crosses_the_antimeridian(
    lat: float, lon: float, inside: bool
) -> None:
    box = parse_bbox("170,-10,-170,10")
    assert box.crosses_antimeridian
    assert box.contains(lat, lon) is inside


def test_longitudes_180_and_minus_180_are_one_meridian_for_a_bbox() -> None:
    assert BBox(170.0, -10.0, 180.0, 10.0).contains(0.0, -180.0)
    assert BBox(-180.0, -10.0, -170.0, 10.0).contains(0.0, 180.0)
    assert not BBox(-180.0, -10.0, -170.0, 10.0).contains(11.0, 180.0)
    assert not BBox(0.0, -10.0, 10.0, 10.0).contains(0.0, 180.0)


def test_parse_bbox_allows_whitespace_around_numbers() -> None:
    assert parse_bbox(" 170 , -10,-170 ,\t10 ") == BBox(170.0, -10.0, -170.0, 10.0)
    assert parse_bbox("-180,-90,180,90").contains(-90.0, 180.0)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("1,2,3", ["bbox must be four numbers minLon,minLat,maxLon,maxLat", "got 3 values"]),
        ("1,2,3,4,5", ["bbox must be four numbers", "got 5 values"]),
        ("", ["bbox must be four numbers", "got 1 value in ''"]),
        ("a,2,3,4", ["bbox minLon must be a number, got 'a'"]),
        ("1,2,,4", ["bbox maxLon must be a number, got ''"]),
        ("1_0,2,3,4", ["bbox minLon must be a number, got '1_0'"]),
        ("nan,2,3,4", ["bbox minLon must be a finite number, got 'nan'"]),
        ("1,-inf,3,4", ["bbox minLat must be a finite number"]),
        ("1,2,3,1e999", ["bbox maxLat must be a finite number, got '1e999'"]),
        ("1,-91,3,4", ["bbox minLat must be between -90 and 90, got -91", "longitude first"]),
        ("1,2,3,90.5", ["bbox maxLat must be between -90 and 90, got 90.5"]),
        ("-180.5,2,3,4", ["bbox minLon must be between -180 and 180, got -180.5"]),
        ("1,2,181,4", ["bbox maxLon must be between -180 and 180, got 181"]),
        (
            "1,50,3,40",
            ["bbox minLat (50) must not be above maxLat (40)", "the southern edge comes first"],
        ),
    ],
)
def test_parse_bbox_says_what_is_wrong(text: str, fragments: list[str]) -> None:
    message = invalid(parse_bbox, text)
    for fragment in fragments:
        assert fragment in message


# -- circles -------------------------------------------------------------------------------------


def test_near_is_latitude_first() -> None:
    circle = parse_near(" 52.52, 13.405 ", " 500 ")
    assert circle == Circle(52.52, 13.405, 500.0)
    assert circle.contains(52.52, 13.405)
    assert not circle.contains(13.405, 52.52)


def test_a_circle_holds_its_rim_and_nothing_further() -> None:
    north = Circle(0.0, 0.0, ONE_DEGREE_M * (1 + 1e-7))
    assert north.contains(1.0, 0.0)
    assert north.distance_m(1.0, 0.0) == pytest.approx(ONE_DEGREE_M, rel=1e-12)
    assert not Circle(0.0, 0.0, ONE_DEGREE_M * (1 - 1e-7)).contains(1.0, 0.0)
    rim = Circle(0.0, 0.0, haversine_m(0.0, 0.0, 1.0, 0.0))
    assert rim.contains(1.0, 0.0)  # distance == radius
    assert not rim.contains(math.nextafter(1.0, 2.0), 0.0)


def test_a_circle_reaches_across_the_antimeridian() -> None:
    circle = parse_near("0,179.9", "50000")
    assert circle.contains(0.0, -179.95)
    assert circle.contains(0.0, 180.0)
    assert circle.contains(0.0, -180.0)
    assert not circle.contains(0.0, -179.0)
    assert circle.distance_m(0.0, -179.9) == pytest.approx(0.2 * ONE_DEGREE_M, rel=1e-9)
    west, east = circle.bounds()
    assert west.max_lon == 180.0
    assert east.min_lon == -180.0


def test_the_largest_radius_covers_the_whole_earth() -> None:
    circle = parse_near("10,20", str(MAX_RADIUS_M))
    assert circle.contains(-10.0, -160.0)  # the antipode
    assert circle.bounds() == [BBox(-180.0, -90.0, 180.0, 90.0)]


@PROPERTY
@given(
    lat=latitudes,
    lon=longitudes,
    radius=st.one_of(
        st.floats(1e-3, MAX_RADIUS_M), st.floats(1, 300_000), st.sampled_from([MAX_RADIUS_M])
    ),
    bearing=st.floats(0, 360),
    fraction=st.floats(0, 1),
)
# The rim due north: a bound without a margin for rounding leaves it out.
@example(lat=1.0, lon=0.0, radius=4.0, bearing=0.0, fraction=1.0)
@example(lat=88.0, lon=0.0, radius=1.0, bearing=0.0, fraction=1.0)
@example(lat=89.99, lon=179.99, radius=1000.0, bearing=90.0, fraction=1.0)
def test_circle_bounds_hold_every_point_of_the_circle(
    lat: float, lon: float, radius: float, bearing: float, fraction: float
) -> None:
    circle = Circle(lat, lon, radius)
    point = destination(lat, lon, bearing, radius * fraction)
    boxes = circle.bounds()
    assert 1 <= len(boxes) <= 2
    for box in boxes:
        assert -180 <= box.min_lon <= box.max_lon <= 180
        assert -90 <= box.min_lat <= box.max_lat <= 90
    assert any(box.contains(*point) for box in boxes), (point, boxes)
    if radius >= 1 and fraction <= 0.999:
        assert circle.contains(*point)


@PROPERTY
@given(lat=st.floats(-85, 85), lon=longitudes, radius=st.floats(1, 5_000_000))
def test_circle_bounds_leave_out_the_far_side(lat: float, lon: float, radius: float) -> None:
    reach = math.degrees(radius / EARTH_RADIUS_M)
    assume(lat - reach > -89 and lat + reach < 89)
    boxes = Circle(lat, lon, radius).bounds()
    assert not any(box.contains(lat, wrapped(lon + 180)) for box in boxes)
    assert not any(box.contains(lat + reach + 0.01, lon) for box in boxes)
    assert not any(box.contains(lat - reach - 0.01, lon) for box in boxes)


@PROPERTY
@given(
    lat=latitudes,
    lon=longitudes,
    radius=st.floats(1e-3, MAX_RADIUS_M),
    bearing=st.floats(0, 360),
    stretch=st.one_of(st.floats(0, 2), st.floats(1 - 1e-8, 1 + 1e-8), st.just(1.0)),
)
def test_circle_contains_exactly_when_distance_is_within_radius(
    lat: float, lon: float, radius: float, bearing: float, stretch: float
) -> None:
    circle = Circle(lat, lon, radius)
    point = destination(lat, lon, bearing, min(radius * stretch, HALF_CIRCUMFERENCE_M))
    assert circle.contains(*point) is (circle.distance_m(*point) <= radius)


@pytest.mark.parametrize(
    ("near", "radius_m", "fragments"),
    [
        ("52.5", "100", ["near must be two numbers lat,lon (latitude first)", "got 1 value"]),
        ("1,2,3", "100", ["near must be two numbers lat,lon", "got 3 values"]),
        ("x,2", "100", ["near latitude must be a number, got 'x'"]),
        ("1,nan", "100", ["near longitude must be a finite number, got 'nan'"]),
        ("91,0", "100", ["near latitude must be between -90 and 90, got 91", "latitude first"]),
        ("-122.4,37.8", "100", ["near latitude must be between -90 and 90, got -122.4"]),
        ("0,181", "100", ["near longitude must be between -180 and 180, got 181"]),
        ("1,2", None, ["radius_m (metres) is required with near"]),
        ("1,2", "ten", ["radius_m must be a number, got 'ten'"]),
        ("1,2", "inf", ["radius_m must be a finite number"]),
        ("1,2", "0", ["radius_m must be more than 0 and at most 20037509 metres", "got '0'"]),
        ("1,2", "-5", ["radius_m must be more than 0", "got '-5'"]),
        ("1,2", "20037509.5", ["at most 20037509 metres", "got '20037509.5'"]),
    ],
)
def test_parse_near_says_what_is_wrong(
    near: str, radius_m: str | None, fragments: list[str]
) -> None:
    message = invalid(parse_near, near, radius_m)
    for fragment in fragments:
        assert fragment in message


# -- areas: fixed cases --------------------------------------------------------------------------


def polygon(*rings: list[list[float]]) -> dict[str, object]:
    return {"type": "Polygon", "coordinates": list(rings)}


def rectangle(west: float, south: float, east: float, north: float) -> list[list[float]]:
    return [[west, south], [east, south], [east, north], [west, north], [west, south]]


ACROSS = polygon([[170, -10], [-170, -10], [-170, 10], [170, 10], [170, -10]])
SPLIT = {
    "type": "MultiPolygon",
    "coordinates": [[rectangle(170, -10, 180, 10)], [rectangle(-180, -10, -170, 10)]],
}


@pytest.mark.parametrize("geojson", [ACROSS, SPLIT], ids=["across", "split"])
@pytest.mark.parametrize(
    ("lat", "lon", "inside"),
    [
        (0, 180, True),
        (0, -180, True),
        (10, 180, True),
        (-10, -180, True),
        (5, 175, True),
        (5, -175, True),
        (0, 170, True),
        (0, -170, True),
        (0, 0, False),
        (0, 169.99, False),
        (0, -169.99, False),
        (10.01, 180, False),
        (-10.01, -180, False),
    ],
)
def test_an_area_across_the_antimeridian_covers_the_short_way_round(
    geojson: dict[str, object], lat: float, lon: float, inside: bool
) -> None:
    area = parse_area(geojson)
    assert area.contains(lat, lon) is inside
    if inside:
        assert any(box.contains(lat, lon) for box in area.bounds())


def test_bounds_of_an_area_across_the_antimeridian_are_split_there() -> None:
    assert parse_area(ACROSS).bounds() == [
        BBox(170.0, -10.0, 180.0, 10.0),
        BBox(-180.0, -10.0, -170.0, 10.0),
    ]


def test_holes_are_outside_and_every_edge_is_inside() -> None:
    area = parse_area(polygon(rectangle(0, 0, 10, 10), rectangle(4, 4, 6, 6)))
    assert area.vertex_count == 8  # closing positions not counted
    assert not area.contains(5, 5)  # in the hole
    assert area.contains(2, 2)
    assert area.contains(5, 4)  # the hole's edge
    assert area.contains(6, 6)  # and corner
    assert area.contains(0, 5)  # the exterior's edge
    assert area.contains(10, 10)  # and corner
    assert not area.contains(10.000001, 5)
    assert not area.contains(5, -0.000001)


def test_a_hole_beyond_the_antimeridian_from_its_exterior_start() -> None:
    area = parse_area(
        polygon(
            [[170, -10], [-170, -10], [-170, 10], [170, 10], [170, -10]],
            rectangle(-178, -2, -175, 2),
        )
    )
    assert not area.contains(0, -176.5)
    assert area.contains(0, -179)
    assert area.contains(0, 175)


def test_vertices_are_inside_even_at_a_peak() -> None:
    triangle = parse_area(polygon([[0, 0], [10, 0], [5, 10], [0, 0]]))
    assert triangle.contains(10, 5)  # the apex: no edge's half-open span reaches it
    assert triangle.contains(0, 0)
    assert not triangle.contains(10, 5.000001)
    assert not triangle.contains(10.000001, 5)


def test_a_point_on_180_is_on_an_edge_at_minus_180() -> None:
    west = parse_area(polygon(rectangle(-180, -10, -170, 10)))
    assert west.contains(0, 180)
    assert west.contains(0, -180)
    assert not west.contains(10.5, 180)
    east = parse_area(polygon(rectangle(170, -10, 180, 10)))
    assert east.contains(0, -180)
    assert not east.contains(0, -179.9)


def test_winding_order_does_not_matter() -> None:
    ring = [[0, 0], [4, 0], [4, 3], [2, 1], [0, 3], [0, 0]]  # a notch from the north
    forward = parse_area(polygon(ring))
    backward = parse_area(polygon(ring[::-1]))
    for lat, lon in [(0.5, 2), (2, 2), (2, 0.5), (2, 3.5), (2.9, 2)]:
        assert forward.contains(lat, lon) is backward.contains(lat, lon)
    assert forward.contains(0.5, 2)
    assert not forward.contains(2, 2)  # in the notch


def test_a_feature_of_a_polygon_and_positions_with_altitude() -> None:
    ring = [[lon, lat, 120.5] for lon, lat in rectangle(13, 52, 14, 53)]
    area = parse_area({"type": "Feature", "properties": {"name": "x"}, "geometry": polygon(ring)})
    assert area.contains(52.5, 13.5)
    assert not area.contains(13.5, 52.5)


def test_a_polar_cap_from_minus_180_to_180_covers_every_longitude() -> None:
    cap = parse_area(polygon([[-180, 80], [180, 80], [180, 90], [-180, 90], [-180, 80]]))
    for lon in (-180, -90, 0, 45.5, 180):
        assert cap.contains(80, lon)
        assert cap.contains(85, lon)
        assert cap.contains(90, lon)
        assert not cap.contains(79.9, lon)
    assert cap.bounds() == [BBox(-180.0, 80.0, 180.0, 90.0)]


def test_a_ring_round_a_pole_is_refused() -> None:
    message = invalid(parse_area, polygon([[0, 80], [90, 80], [180, 80], [-90, 80], [0, 80]]))
    assert "area coordinates[0] goes all the way round the earth" in message
    assert "[[-180,80],[180,80],[180,90],[-180,90],[-180,80]]" in message


def test_the_whole_world() -> None:
    world = parse_area(polygon(rectangle(-180, -90, 180, 90)))
    for lat, lon in [(0, 0), (-90, 180), (45, -180), (89.9, 179.9), (-12, 77)]:
        assert world.contains(lat, lon)


def test_at_most_max_area_vertices_counting_holes_not_closing_positions() -> None:
    def circle_ring(count: int, radius: float) -> list[list[float]]:
        ring = [
            [radius * math.cos(2 * math.pi * k / count), radius * math.sin(2 * math.pi * k / count)]
            for k in range(count)
        ]
        return [*ring, ring[0]]

    largest = parse_area(polygon(circle_ring(MAX_AREA_VERTICES, 10)))
    assert largest.vertex_count == MAX_AREA_VERTICES
    assert largest.contains(0, 0)
    message = invalid(
        parse_area, polygon(circle_ring(MAX_AREA_VERTICES - 4, 10), circle_ring(5, 1))
    )
    assert f"area has 1001 vertices, more than the {MAX_AREA_VERTICES} allowed" in message
    assert "holes" in message


@pytest.mark.parametrize(
    ("geojson", "fragments"),
    [
        ([], ["area must be a GeoJSON Polygon or MultiPolygon, or a Feature of one, got a list"]),
        ({"type": "Point", "coordinates": [0, 0]}, ["got type 'Point'"]),
        ({"type": "FeatureCollection", "features": []}, ["got type 'FeatureCollection'"]),
        ({"coordinates": []}, ["area must be a GeoJSON Polygon", '"type" member is missing']),
        (
            {"type": "Feature", "geometry": None},
            ["area Feature's geometry must be a Polygon or MultiPolygon, got null"],
        ),
        (
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [0, 0]}},
            ["area Feature's geometry must be a Polygon or MultiPolygon, got type 'Point'"],
        ),
        ({"type": "Polygon"}, ["area coordinates must be a list of rings, got null"]),
        ({"type": "Polygon", "coordinates": []}, ["area coordinates has no rings"]),
        ({"type": "MultiPolygon", "coordinates": []}, ["area coordinates has no polygons"]),
        (
            {"type": "MultiPolygon", "coordinates": [5]},
            ["area coordinates[0] must be a list of rings, got 5"],
        ),
        (
            {"type": "MultiPolygon", "coordinates": [[]]},
            ["area coordinates[0] has no rings"],
        ),
        (polygon("ring"), ["area coordinates[0] must be a list of positions, got 'ring'"]),
        (
            polygon([[0, 0], [1, 0], [0, 0]]),
            ["area coordinates[0] must have at least 4 positions", "got 3"],
        ),
        (
            polygon([[0, 0], [1, 0], [1, 1], [0, 1]]),
            ["area coordinates[0] is not closed: its last position [0, 1] must repeat its first"],
        ),
        (
            polygon(rectangle(0, 0, 1, 1), [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0.5]]),
            ["area coordinates[1] is not closed"],
        ),
        (
            polygon([[0, 0], [1], [1, 1], [0, 0]]),
            ["area coordinates[0][1] must be a position [lon, lat] or [lon, lat, alt], got [1]"],
        ),
        (polygon([[0, 0], [1, 0, 0, 0], [1, 1], [0, 0]]), ["area coordinates[0][1] must be"]),
        (
            polygon([[0, 0], ["1", 0], [1, 1], [0, 0]]),
            ["area coordinates[0][1][0]: longitude must be a number, got '1'"],
        ),
        (
            polygon([[0, 0], [1, True], [1, 1], [0, 0]]),
            ["area coordinates[0][1][1]: latitude must be a number, got True"],
        ),
        (
            polygon([[0, 0], [1, 0, "high"], [1, 1], [0, 0]]),
            ["area coordinates[0][1][2]: altitude must be a number"],
        ),
        (
            polygon([[0, 0], [math.nan, 0], [1, 1], [0, 0]]),
            ["area coordinates[0][1][0]: longitude must be a finite number, got nan"],
        ),
        (
            polygon([[0, 0], [10**400, 0], [1, 1], [0, 0]]),
            ["area coordinates[0][1][0]: longitude must be a finite number"],
        ),
        (
            polygon([[0, 0], [200, 0], [1, 1], [0, 0]]),
            ["area coordinates[0][1]: longitude must be between -180 and 180, got 200"],
        ),
        (
            polygon([[0, 0], [10, 95], [1, 1], [0, 0]]),
            ["area coordinates[0][1]: latitude must be between -90 and 90, got 95", "[lon, lat]"],
        ),
        (
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1]]]},
            },
            ["area geometry.coordinates[0] must have at least 4 positions"],
        ),
        (
            {"type": "MultiPolygon", "coordinates": [[rectangle(0, 0, 1, 1)], [[[0, 0]]]]},
            ["area coordinates[1][0] must have at least 4 positions"],
        ),
        (
            # 0 -> 170 -> 340 -> 370 and back: more than once round in longitude.
            polygon(
                [
                    [0, 0],
                    [170, 0],
                    [-20, 0],
                    [10, 0],
                    [10, 10],
                    [-160, 10],
                    [30, 10],
                    [0, 10],
                    [0, 0],
                ]
            ),
            ["area coordinates[0] spans more than 360 degrees of longitude"],
        ),
        (
            polygon([[0, 0]] * (MAX_AREA_VERTICES + 2)),
            [f"area has {MAX_AREA_VERTICES + 1} vertices", "simplify it"],
        ),
    ],
)
def test_parse_area_says_what_is_wrong(geojson: object, fragments: list[str]) -> None:
    message = invalid(parse_area, geojson)
    for fragment in fragments:
        assert fragment in message


# -- areas: random polygons against an oracle ----------------------------------------------------

Ring = list[tuple[float, float]]  # (x, y): continuous longitude, latitude


def in_ring(ring: Ring, x: float, y: float) -> bool:
    """Even-odd ray casting, every edge, no shortcuts."""
    inside = False
    for (x1, y1), (x2, y2) in zip(ring, ring[1:] + ring[:1], strict=True):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def near_edge(ring: Ring, x: float, y: float, tolerance: float = 1e-7) -> bool:
    for (x1, y1), (x2, y2) in zip(ring, ring[1:] + ring[:1], strict=True):
        dx, dy = x2 - x1, y2 - y1
        t = max(0.0, min(1.0, ((x - x1) * dx + (y - y1) * dy) / (dx * dx + dy * dy or 1.0)))
        if math.hypot(x - x1 - t * dx, y - y1 - t * dy) < tolerance:
            return True
    return False


def oracle(polygons: list[tuple[Ring, list[Ring]]], lat: float, lon: float) -> bool | None:
    """Whether (lat, lon) is in the union of the polygons, their rings in continuous longitude
    (any frame): tried at lon and lon +- 360. None when the point is on or very near an edge."""
    inside = False
    for x in (lon - 360.0, lon, lon + 360.0):
        for exterior, holes in polygons:
            if any(near_edge(ring, x, lat) for ring in (exterior, *holes)):
                return None
            if in_ring(exterior, x, lat) and not any(in_ring(hole, x, lat) for hole in holes):
                inside = True
    return inside


@st.composite
def star_polygons(draw: st.DrawFn) -> tuple[Ring, list[Ring]]:
    """A star-shaped ring round a centre anywhere (often by the antimeridian) in continuous
    longitude, maybe with a star-shaped hole well inside it."""
    centre_lon = draw(st.one_of(st.floats(-180, 180), st.floats(165, 180), st.floats(-180, -165)))
    centre_lat = draw(st.floats(-60, 60))
    count = draw(st.integers(5, 40))
    jitters = draw(st.lists(st.floats(0, 0.8), min_size=count, max_size=count))
    radii = draw(st.lists(st.floats(0.5, 20), min_size=count, max_size=count))
    angles = [2 * math.pi * (k + jitter) / count for k, jitter in enumerate(jitters)]
    exterior = [
        (centre_lon + r * math.cos(a), centre_lat + r * math.sin(a))
        for a, r in zip(angles, radii, strict=True)
    ]
    holes = []
    if draw(st.booleans()):
        # The exterior holds the disc of min(radii) * cos(widest gap / 2) round the centre.
        gaps = [(angles[(k + 1) % count] - angles[k]) % (2 * math.pi) for k in range(count)]
        room = 0.9 * min(radii) * math.cos(max(gaps) / 2)
        sides = draw(st.integers(3, 10))
        phase = draw(st.floats(0, 2 * math.pi))
        sizes = draw(st.lists(st.floats(0.1, 0.5), min_size=sides, max_size=sides))
        # Off the centre by up to half the room, so that a hole may straddle the antimeridian
        # where its exterior does not start.
        east, north = draw(st.floats(-0.5, 0.5)) * room, draw(st.floats(-0.5, 0.5)) * room
        holes.append(
            [
                (
                    centre_lon + east + room * size * math.cos(phase + 2 * math.pi * k / sides),
                    centre_lat + north + room * size * math.sin(phase + 2 * math.pi * k / sides),
                )
                for k, size in enumerate(sizes)
            ]
        )
    return exterior, holes


def as_geojson_ring(ring: Ring, start: int, backwards: bool) -> list[list[float]]:
    """The ring as GeoJSON writes it: longitudes in [-180, 180), closed, from any vertex, either
    way round."""
    ordered = ring[start:] + ring[:start]
    if backwards:
        ordered.reverse()
    positions = [[wrapped(x), y] for x, y in ordered]
    return [*positions, positions[0]]


@FEW
@given(
    polygons=st.lists(star_polygons(), min_size=1, max_size=3),
    start=st.integers(0, 100),
    backwards=st.booleans(),
    multi=st.booleans(),
    feature=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_areas_agree_with_plain_ray_casting(
    polygons: list[tuple[Ring, list[Ring]]],
    start: int,
    backwards: bool,
    multi: bool,
    feature: bool,
    seed: int,
) -> None:
    members = [
        [as_geojson_ring(ring, start % len(ring), backwards) for ring in (exterior, *holes)]
        for exterior, holes in polygons
    ]
    geometry: dict[str, object] = (
        {"type": "Polygon", "coordinates": members[0]}
        if len(members) == 1 and not multi
        else {"type": "MultiPolygon", "coordinates": members}
    )
    area = parse_area({"type": "Feature", "geometry": geometry} if feature else geometry)
    assert area.vertex_count == sum(len(ring) - 1 for member in members for ring in member)
    bounds = area.bounds()

    rng = random.Random(seed)
    points = [(rng.uniform(-90, 90), rng.uniform(-180, 180)) for _ in range(20)]
    for exterior, holes in polygons:
        for ring in (exterior, *holes):
            # Around each ring, a little beyond its box, so that holes get their share.
            xs, ys = [x for x, _ in ring], [y for _, y in ring]
            grow = 0.1 * max(max(xs) - min(xs), max(ys) - min(ys))
            points += [
                (
                    rng.uniform(min(ys) - grow, max(ys) + grow),
                    wrapped(rng.uniform(min(xs) - grow, max(xs) + grow)),
                )
                for _ in range(30)
            ]
        lats = [y for _, y in exterior]
        points += [
            (rng.uniform(min(lats), max(lats)), rng.choice([-180.0, 180.0])) for _ in range(5)
        ]
    checked = 0
    for lat, lon in points:
        expected = oracle(polygons, lat, lon)
        if expected is None:
            continue
        checked += 1
        assert area.contains(lat, lon) is expected, (lat, lon)
        if expected:
            assert any(box.contains(lat, lon) for box in bounds), (lat, lon, bounds)
    assert checked > len(points) // 2


@PROPERTY
@given(
    west=st.floats(100, 179.5),
    east=st.floats(-179.5, -100),
    south=st.floats(-80, 70),
    height=st.floats(0.5, 10),
    lats=st.lists(st.one_of(st.floats(-90, 90), st.sampled_from(["south", "north"])), max_size=8),
    lons=st.lists(
        st.one_of(st.floats(-180, 180), st.sampled_from(["west", "east", 180.0, -180.0])),
        max_size=8,
    ),
)
def test_an_area_across_the_antimeridian_and_split_at_it_answer_alike(
    west: float, east: float, south: float, height: float, lats: list[Any], lons: list[Any]
) -> None:
    assume(east + 360 - west < 180)
    north = south + height
    across = parse_area(polygon(rectangle(west, south, east, north)))
    split = parse_area(
        {
            "type": "MultiPolygon",
            "coordinates": [
                [rectangle(west, south, 180, north)],
                [rectangle(-180, south, east, north)],
            ],
        }
    )
    named = {"south": south, "north": north, "west": west, "east": east}
    for lat in [named.get(value, value) for value in lats]:
        for lon in [named.get(value, value) for value in lons]:
            # Edges along meridians and parallels are exact: boundary points are inside.
            expected = south <= lat <= north and (lon >= west or lon <= east)
            assert across.contains(lat, lon) is expected, (lat, lon)
            assert split.contains(lat, lon) is expected, (lat, lon)


def test_area_repr_names_its_size() -> None:
    area = parse_area(SPLIT)
    assert isinstance(area, Area)
    assert repr(area) == "Area(2 polygons, 8 vertices)"
