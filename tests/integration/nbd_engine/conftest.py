"""Fixtures of the copy-engine tests (everything they start is stopped and removed)."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sendense_tools.nbd.endpoint import TlsPsk
from tests.fixtures.ports import free_port
from tests.integration.nbd_engine.servers import DISK_SIZE, QemuTarget, SourceDisk, make_sparse_disk


@pytest.fixture(scope="module")
def source_disk(tmp_path_factory: pytest.TempPathFactory) -> SourceDisk:
    path = tmp_path_factory.mktemp("nbd-src") / "disk.raw"
    return SourceDisk(path, DISK_SIZE, make_sparse_disk(path, DISK_SIZE, seed=5))


@pytest.fixture
def make_target(tmp_path: Path) -> Iterator[Callable[..., QemuTarget]]:
    """make_target(size, tls=False, slow=False) -> a started QemuTarget on a fresh qcow2."""
    targets: list[QemuTarget] = []

    def make(size: int, tls: bool = False, slow: bool = False) -> QemuTarget:
        image = tmp_path / f"target{len(targets)}.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(image), str(size)], check=True
        )
        # ~8 MB/s: the test disk's ~45 MB of data take several seconds
        target = QemuTarget(image, free_port(), write_bps=8_000_000 if slow else None)
        if tls:
            target.psk_dir = tmp_path / f"psk{len(targets)}"
            target.psk_dir.mkdir(mode=0o700)
            target.tls = TlsPsk("sendense", secrets.token_hex(32))
            keys = target.psk_dir / "keys.psk"
            keys.write_text(f"{target.tls.username}:{target.tls.psk_hex}\n")
            keys.chmod(0o600)
        targets.append(target)
        target.start()
        return target

    yield make
    for target in targets:
        target.stop()


@pytest.fixture
def make_overlay(tmp_path: Path) -> Iterator[Callable[[Path], QemuTarget]]:
    """make_overlay(older_raw, write_bps=None) -> a started QemuTarget on a qcow2 overlay
    whose backing file holds `older_raw`'s content (as an incremental's target on the hub)."""
    targets: list[QemuTarget] = []

    def make(older: Path, write_bps: int | None = None) -> QemuTarget:
        base = tmp_path / f"base{len(targets)}.qcow2"
        overlay = tmp_path / f"overlay{len(targets)}.qcow2"
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(older), str(base)], check=True)
        subprocess.run(
            [*("qemu-img", "create", "-q", "-f", "qcow2"), *("-b", str(base), "-F", "qcow2"),
             str(overlay)],
            check=True,
        )  # fmt: skip
        target = QemuTarget(overlay, free_port(), write_bps=write_bps)
        targets.append(target)
        target.start()
        return target

    yield make
    for target in targets:
        target.stop()
