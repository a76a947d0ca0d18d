"""`trackstore erase --device ID [--before TIME]`: a device's locations (and, without --before, its
record) deleted on a data-protection request. Batched, with a progress bar on stderr; safe to
interrupt and run again; prints what it erased."""

from __future__ import annotations

import argparse
import asyncio

from tqdm import tqdm

from trackstore.cli.args import Subcommands
from trackstore.config import Settings
from trackstore.container import build_container, opened
from trackstore.erasure import Erasure, ErasureReport
from trackstore.errors import INVALID, Error
from trackstore.timefmt import format_ms, parse_time


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "erase",
        help="delete a device's locations (and its record) on request",
        description="Delete a device's locations, oldest first, in batches; without --before, "
        "also its device record. Safe to interrupt and run again. totalUpdates is a lifetime "
        "counter and is not lowered.",
    )
    parser.add_argument("--device", required=True, metavar="ID", help="the device id")
    parser.add_argument(
        "--before",
        metavar="TIME",
        help="erase only locations older than this (ISO-8601 with offset, or epoch s/ms); "
        "the device record stays",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="count what would be erased, erase nothing"
    )
    parser.set_defaults(run=run, traced=False, talks_to_aws=True)


async def run(args: argparse.Namespace, settings: Settings, stop: asyncio.Event) -> None:
    before = _before(args.before)
    container = build_container(settings)
    async with opened(container):
        erasure = Erasure(container.locations(), container.devices(), args.device, before)
        total = await erasure.count()
        scope = f"{args.device}'s locations" + ("" if before is None else f" before {args.before}")
        if args.dry_run:
            print(f"would erase {total:,} of {scope}", flush=True)
            return
        with tqdm(total=total, unit=" locations", desc="erasing", mininterval=0.5) as bar:
            async for erased in erasure.run():
                bar.update(erased)
                if stop.is_set():
                    bar.close()
                    print("interrupted: run the same command again to finish", flush=True)
                    return
        print(_summary(await erasure.finish()), flush=True)


def _before(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_time(text)
    except (ValueError, OverflowError) as exc:
        raise Error(INVALID, f"--before: {exc}") from None


def _summary(report: ErasureReport) -> str:
    lines = [f"erased {report.locations_erased:,} locations of {report.device_id}"]
    if report.oldest_erased is not None and report.newest_erased is not None:
        lines[0] += f", {format_ms(report.oldest_erased)} to {format_ms(report.newest_erased)}"
    if report.last_location_cleared:
        lines.append("lastLocation cleared (it was among them)")
    if report.device_deleted:
        lines.append("device record deleted")
    elif report.before is None:
        lines.append("no device record")
    else:
        lines.append("device record kept (totalUpdates is a lifetime count and stays)")
    return "\n".join(lines)
