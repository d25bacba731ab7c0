"""`python -m tests.fleet run|down|inventory`: the lab fleet of `make fleet-scale`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.fleet import inventory, podman
from tests.fleet.inventory import Plan
from tests.fleet.podman import FleetError
from tests.fleet.rollout import ROOT
from tests.fleet.run import Options, run

WORKDIR = ROOT / ".cache" / "fleet-scale"
DEFAULT_NODES = 20
DEFAULT_FORKS = 10  # ansible.cfg's: past it, 2 cores only queue more podman execs


def batch_sizes(text: str) -> list[int | str]:
    """`1,25%,100%` -> [1, "25%", "100%"], as Ansible's serial takes them."""
    sizes: list[int | str] = []
    for part in text.split(","):
        number = part.removesuffix("%")
        if not number.isdigit() or int(number) < 1 or (part.endswith("%") and int(number) > 100):
            raise argparse.ArgumentTypeError(f"a batch is a count or a percentage, not {part!r}")
        sizes.append(part if part.endswith("%") else int(part))
    return sizes


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tests.fleet",
        description="A lab fleet in Podman: N nodes on one hub, deployed with rollout.yml, "
        "all backing up at once.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "create the fleet, roll out, back up every node at once, check, tear down"),
        ("inventory", "only write the fleet's inventory"),
    ):
        c = sub.add_parser(name, help=text, description=text)
        c.add_argument("--nodes", type=int, default=DEFAULT_NODES, help="nodes (default 20)")
        c.add_argument("--hubs", type=int, default=1, help="hubs the nodes are spread over")
        c.add_argument("--workdir", type=Path, default=WORKDIR, help="inventory and logs")
        if name == "run":
            c.add_argument("--forks", type=int, default=DEFAULT_FORKS, help="Ansible forks")
            c.add_argument("--keep", action="store_true", help="leave the containers running")
            c.add_argument(
                "--batches",
                type=batch_sizes,
                default=None,
                help="rollout batches, e.g. 1,25%%,100%% (default: rollout.yml's)",
            )
            c.add_argument(
                "--reuse",
                action="store_true",
                help="skip creating and rolling out: back up and check the fleet a --keep run left",
            )
    sub.add_parser("down", help="remove every container and the network of the fleet")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.command == "down":
        try:
            removed = podman.down()
        except FleetError as exc:
            print(f"fleet: error: {exc}", file=sys.stderr)
            return 1
        print(f"fleet: removed {len(removed)} containers and network {inventory.NETWORK}")
        return 0
    try:
        plan = Plan(args.nodes, args.hubs)
    except ValueError as exc:
        p.error(str(exc))
    if args.command == "inventory":
        print(inventory.write(plan, args.workdir / "inventory"))
        return 0
    if args.nodes < 2:
        p.error("run needs at least 2 nodes: its isolation checks are between nodes")
    if args.forks < 1:
        p.error(f"forks must be at least 1, not {args.forks}")
    try:
        return run(Options(plan, args.forks, args.workdir, args.keep, args.reuse, args.batches))
    except FleetError as exc:
        print(f"fleet: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
