"""`make bench`: run every benchmark module (or those named), each in a fresh
process so one's memory and threads never colour another's figures."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = argv or sorted(
        m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_")
    )
    if len(names) == 1:
        print(f"== bench/{names[0]}.py", flush=True)
        importlib.import_module(f"bench.{names[0]}").main()
        return 0
    failed = [n for n in names if subprocess.run([sys.executable, "-m", "bench", n]).returncode]
    if failed:
        print(f"bench: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
