"""The lab's vCenter host runs `python -m sendense_tools.lab seed` from a venv
without python3-libnbd (inventory/lab: no service packages there)."""

from __future__ import annotations

import subprocess
import sys

BLOCK_NBD = """
import sys

class NoLibnbd:
    def find_spec(self, name, path=None, target=None):
        if name == "nbd":
            raise ImportError("No module named 'nbd'")

sys.meta_path.insert(0, NoLibnbd())
import sendense_tools.lab.cli
import sendense_tools.lab.seed
print("ok")
"""


def test_the_lab_seeder_imports_without_libnbd():
    done = subprocess.run(
        [sys.executable, "-c", BLOCK_NBD], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
