"""DeviceRepository.changed_since over every adapter: what a fleet snapshot reads every few
seconds. A device is returned when its position, name or registration changed at or after the
time asked (by the repository's clock), and every device when no time is given."""

from __future__ import annotations

import uuid

import pytest

from tests.contract.conftest import Repos
from tests.contract.test_device_repository import report
from tests.helpers import activity
from trackstore.dynamodb import DynamoDeviceRepository, dynamodb_client
from trackstore.dynamodb.tables import FLEET_INDEX, devices_table, ensure_table

SECOND = 1000


def ids(devices: list[object]) -> list[str]:
    return sorted({d.device_id for d in devices})  # type: ignore[attr-defined]


async def test_every_device_when_no_time_is_given(repos: Repos) -> None:
    await repos.devices.register("named", "Line 5", {"depot": "north"}, repos.clock())
    await report(repos, "moving", 1, 2)
    everyone = await repos.devices.changed_since(None)
    assert ids(everyone) == ["moving", "named"]
    named = next(d for d in everyone if d.device_id == "named")
    assert (named.name, named.metadata) == ("Line 5", {"depot": "north"})
    moving = next(d for d in everyone if d.device_id == "moving")
    assert moving.last_location is not None
    assert moving.last_seen == moving.last_location.timestamp
    assert moving.total_updates == 2


async def test_only_what_changed_since_the_time_asked(repos: Repos) -> None:
    await report(repos, "early", 1)
    await repos.devices.register("early-named", None, None, repos.clock())
    repos.clock.advance(10 * SECOND)
    since = repos.clock()
    await report(repos, "late", 1)
    repos.clock.advance(SECOND)
    await repos.devices.register("late-named", "Night bus", None, repos.clock())
    await report(repos, "early", 2)  # moves again: changed now

    changed = await repos.devices.changed_since(since)
    assert ids(changed) == ["early", "late", "late-named"]
    early = next(d for d in changed if d.device_id == "early")
    assert early.last_location is not None
    assert early.last_location.timestamp == early.last_seen  # the newer position
    assert await repos.devices.changed_since(repos.clock() + SECOND) == []


async def test_a_late_record_alone_is_no_change_of_position(repos: Repos) -> None:
    """A batch that only adds an older location changes no position: a view that shows
    positions has nothing new to read, and does not pay for reading it."""
    await report(repos, "bus-1", 5)
    repos.clock.advance(10 * SECOND)
    since = repos.clock()
    mark = (await repos.devices.marks(["bus-1"]))["bus-1"]
    await repos.devices.apply_activity([activity("bus-1", mark, newest=None, added=1)])
    assert await repos.devices.changed_since(since) == []
    assert (await repos.devices.get("bus-1")).total_updates == 2  # type: ignore[union-attr]


@pytest.mark.parametrize("emulator", ["moto_endpoint"])
async def test_init_adds_the_index_to_a_table_made_before_it(
    emulator: str, request: pytest.FixtureRequest
) -> None:
    """A Devices table created by an older release has no fleet index: the snapshot reads the
    whole table every refresh until `trackstore init` (ensure_table) adds it, and DynamoDB
    backfills it from the items, so what changed since is found again. (dynalite accepts the
    UpdateTable and ignores it, so this runs on moto.)"""
    endpoint = request.getfixturevalue(emulator)
    name = f"devices-{uuid.uuid4().hex[:12]}"
    old = {k: v for k, v in devices_table(name).items() if k != "GlobalSecondaryIndexes"}
    old["AttributeDefinitions"] = [{"AttributeName": "deviceId", "AttributeType": "S"}]
    async with dynamodb_client("us-east-1", endpoint_url=endpoint) as client:
        await ensure_table(client, old)
        devices = DynamoDeviceRepository(client, name, clock=lambda: 5 * SECOND)
        await devices.register("bus-1", "One", None, 0)
        # Without the index: the whole table, not an error.
        assert ids(await devices.changed_since(10 * SECOND)) == ["bus-1"]

        await ensure_table(client, devices_table(name))
        table = (await client.describe_table(TableName=name))["Table"]
        assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == [FLEET_INDEX]
        assert ids(await devices.changed_since(4 * SECOND)) == ["bus-1"]
        assert await devices.changed_since(10 * SECOND) == []
        await client.delete_table(TableName=name)
