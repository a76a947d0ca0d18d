"""The exactly-once plan, table by table: which locations of a batch are fresh, checked or
replayed against a device's mark, and what the device update then says."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import NOW_MS, SECOND_MS, location
from trackstore.domain import Arrival, DeviceMark, position_order, stream_position
from trackstore.exactly_once import plan

A = "shardId-a"
B = "shardId-b"
SEEN = NOW_MS  # the device's lastSeen


def arrival(shard: str, sequence: int, second: int) -> Arrival:
    return Arrival(
        location(timestamp=SEEN + second * SECOND_MS), stream_position(shard, str(sequence), 0)
    )


def kinds(arrivals: list[Arrival], mark: DeviceMark | None) -> list[str]:
    planned = plan("bus-1", arrivals, mark)
    kind = {id(a): "fresh" for a in planned.fresh}
    kind |= {id(a): "checked" for a in planned.checked}
    kind |= {id(a): "replayed" for a in planned.replayed}
    return [kind[id(a)] for a in arrivals]


MARK_A_100 = DeviceMark(last_seen=SEEN, applied_through={A: stream_position(A, "100", 0)})


@pytest.mark.parametrize(
    ("arrivals", "mark", "expected"),
    [
        pytest.param(
            [arrival(A, 101, 1), arrival(A, 102, 2)], MARK_A_100, ["fresh", "fresh"], id="in-order"
        ),
        pytest.param(
            [arrival(A, 99, 1), arrival(A, 100, 2), arrival(A, 101, 3)],
            MARK_A_100,
            ["replayed", "replayed", "fresh"],
            id="replay-then-new",
        ),
        pytest.param(
            [arrival(A, 101, -5), arrival(A, 102, 0)],
            MARK_A_100,
            ["checked", "checked"],
            id="late-or-equal-to-last-seen",
        ),
        pytest.param(
            # Shard B's numbers are lower than A's mark: never compared, never taken for replays.
            [arrival(B, 5, 1), arrival(B, 6, 2)],
            MARK_A_100,
            ["checked", "checked"],
            id="unseen-shard",
        ),
        pytest.param([arrival(A, 1, 1)], None, ["checked"], id="device-never-seen"),
        pytest.param(
            [arrival(A, 101, 1)],
            DeviceMark(last_seen=SEEN, applied_through=None),
            ["checked"],
            id="mark-without-shards",
        ),
    ],
)
def test_each_location_is_planned_by_its_own_shards_mark(
    arrivals: list[Arrival], mark: DeviceMark | None, expected: list[str]
) -> None:
    assert kinds(arrivals, mark) == expected


def test_the_marks_move_only_for_shards_with_new_records() -> None:
    mark = DeviceMark(
        last_seen=SEEN,
        applied_through={A: stream_position(A, "100", 0), B: stream_position(B, "50", 0)},
    )
    arrivals = [arrival(A, 90, -9), arrival(B, 51, 1), arrival(B, 53, 3), arrival(B, 52, 2)]

    planned = plan("bus-1", arrivals, mark)

    # A's records were all replays: its mark is left alone, never moved back to 90.
    assert planned.applied_through == {B: stream_position(B, "53", 0)}


def test_the_activity_counts_fresh_and_the_checked_that_were_stored_new() -> None:
    fresh = arrival(A, 101, 2)
    late = arrival(A, 102, -3)
    planned = plan("bus-1", [fresh, late], MARK_A_100)

    activity = planned.activity([late.location])

    assert activity.added == 2
    assert activity.newest == fresh.location
    assert activity.expected == MARK_A_100


def test_a_checked_location_newer_than_last_seen_moves_it() -> None:
    moved = arrival(B, 1, 4)

    activity = plan("bus-1", [moved], MARK_A_100).activity([moved.location])

    assert activity.newest == moved.location
    assert activity.applied_through == {B: moved.position}


def test_nothing_counted_newer_than_last_seen_leaves_it() -> None:
    late = arrival(A, 101, -3)

    activity = plan("bus-1", [late], MARK_A_100).activity([])

    assert (activity.added, activity.newest) == (0, None)


SEQUENCES = st.integers(0, 2**128 - 1)
SUBS = st.integers(0, 10**5)


@given(SEQUENCES, SUBS, SEQUENCES, SUBS, st.integers(0, 30))
def test_positions_order_as_their_numbers(
    a: int, sub_a: int, b: int, sub_b: int, padding: int
) -> None:
    # Kinesis writes sequence numbers without leading zeros, the memory stream pads them.
    first = position_order(stream_position("shardId-1", str(a), sub_a))
    second = position_order(stream_position("shardId-1", str(b).zfill(padding), sub_b))

    assert (first < second) == ((a, sub_a) < (b, sub_b))
    assert (first == second) == ((a, sub_a) == (b, sub_b))
