"""`make setup`'s last step (files/lab/selfcheck.sh): a lab container boots on a network.

The failure case runs the real podman with a PATH from which iptables is hidden,
which is exactly a fresh Debian 12 where `make setup` never installed it: netavark
then fails every container start on a network.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SELFCHECK = REPO / "files" / "lab" / "selfcheck.sh"
SETUP = REPO / "files" / "scripts" / "setup.sh"

pytestmark = pytest.mark.skipif(shutil.which("podman") is None, reason="podman not installed")


def _apt_packages() -> set[str]:
    text = SETUP.read_text()
    block = re.search(r"APT_PACKAGES=\((.*?)\)", text, re.S)
    assert block, "setup.sh has no APT_PACKAGES list"
    return set(block.group(1).split())


def _path_without(tmp_path: Path, hidden: str) -> str:
    """A PATH of symlinks to every program on this machine's PATH but `hidden*`."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for d in [*os.environ["PATH"].split(os.pathsep), "/usr/sbin", "/sbin"]:
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            target = bindir / name
            if name.startswith(hidden) or target.exists():
                continue
            src = os.path.join(d, name)
            if os.path.isfile(src) and os.access(src, os.X_OK):
                target.symlink_to(src)
    return str(bindir)


def _run(env_path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if env_path is not None:
        env["PATH"] = env_path
    return subprocess.run(
        ["bash", str(SELFCHECK)], env=env, capture_output=True, text=True, timeout=120
    )


def test_setup_installs_every_package_the_self_check_needs() -> None:
    loop = re.search(r"for need in (.*?); do", SELFCHECK.read_text(), re.S)
    assert loop, "selfcheck.sh has no list of needed programs"
    packages = {pair.rsplit(":", 1)[1] for pair in loop.group(1).replace("\\", " ").split()}
    assert "iptables" in packages
    assert packages <= _apt_packages()


def test_self_check_passes_here_and_leaves_nothing() -> None:
    result = _run()
    assert result.returncode == 0, result.stderr
    assert "self-check passed" in result.stdout
    leftovers = subprocess.run(
        ["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True
    ).stdout
    assert "sendense-selfcheck" not in leftovers
    assert subprocess.run(["podman", "network", "exists", "sendense-selfcheck"]).returncode == 1


def test_self_check_names_missing_iptables_in_one_line(tmp_path: Path) -> None:
    result = _run(_path_without(tmp_path, "iptables"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "iptables" in lines[0]
    assert "apt-get install iptables" in lines[0]
