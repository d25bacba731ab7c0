"""`python -m sendense_tools.tunnel ...`: the tunnel commands on their own.

Same commands and exit codes as `sendense tunnel ...`, without importing the
hub, node or backup code: what a minimal node unit (and the tunnel tests) run.
"""

from __future__ import annotations

from sendense_tools.clirun import run
from sendense_tools.tunnel.cli import tunnel


def main() -> None:
    run(tunnel, "sendense tunnel", prefix="sendense")


if __name__ == "__main__":
    main()
