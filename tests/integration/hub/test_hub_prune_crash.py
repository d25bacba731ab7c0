"""A hub killed (SIGKILL) in the middle of a merge: every remaining point still reads
bit-identical and matches its checksum, and the restarted hub finishes the merge.

The chain F <- I1 is made once through the in-process hub (two 512 MiB disks, 384 MiB
of data each in F, 128 MiB changed each in I1: big enough that each step of a merge
lasts a moment on this machine), kept as a template and put back, at the same paths
(the qcow2 files name their backing files by absolute path), for each instant.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from sendense_tools.hub.chaincheck import check_chain
from sendense_tools.hub.store import Store
from sendense_tools.hub.verify import verify_chain
from tests.fixtures.ports import free_port_range

from .chains import Vm, backing_of
from .conftest import MiB, NodeServer, hub_config, qemu_nbd_under
from .pruning import (
    POLICY,
    check_clean,
    copies,
    merge_leftovers,
    policy_backup,
    same_as_copies,
    set_policy,
)
from .test_hub_restart import HubProcess, toml

pytestmark = pytest.mark.asyncio

SIZE = 512 * MiB
FULL_DATA = 384 * MiB
CHANGED = 128 * MiB
CHUNK = 4 * MiB
# Built once per session: (work dir, template dir, F, I1, raw copies of each point).
_BUILT: dict[str, Any] = {}


def _full() -> list:
    return [(o, os.urandom(CHUNK)) for o in range(0, FULL_DATA, CHUNK)]


def _changes() -> list:
    # Every other 4 MiB of the first 256 MiB: the overlay holds 128 MiB.
    return [(o, os.urandom(CHUNK)) for o in range(0, 2 * CHANGED, 2 * CHUNK)]


async def _build(make_hub, work: Path) -> None:
    h = await make_hub(ports=4, repository=work / "repository", state=work / "state" / "hub.db")
    set_policy(h, keep_last=1)
    vm = Vm(h, "big01", [SIZE, SIZE])
    full = await policy_backup(vm, "full", writes=[_full() for _ in range(2)])
    inc = await policy_backup(vm, "incremental", writes=[_changes() for _ in range(2)])
    await h.hub.stop()
    h.hub.jobs = None  # stopped for good: the fixture must not stop its jobs again
    raws = copies([full, inc], work.parent / "raw")
    template = work.parent / "template"
    shutil.copytree(work, template)
    _BUILT.update(work=work, template=template, full=full, inc=inc, raws=raws)


@pytest.fixture
async def chain_on_disk(make_hub, tmp_path_factory):
    if not _BUILT:
        await _build(make_hub, tmp_path_factory.mktemp("crash") / "work")
    work: Path = _BUILT["work"]
    shutil.rmtree(work)
    shutil.copytree(_BUILT["template"], work)
    return _BUILT


def _procs(*words: str) -> list[int]:
    """Pids whose command line holds every one of `words`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if all(w in argv for w in words):
                found.append(int(entry.name))
    return found


def _journal(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT point, child FROM merges").fetchall()


async def _until(predicate, what: str, bound: float = 300) -> None:
    try:
        async with asyncio.timeout(bound):
            while True:
                if await asyncio.to_thread(predicate):
                    return
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"the merge never reached {what}") from None


def _instant(name: str, child: list[str], point: list[str]):
    """A predicate true at the instant `name` of the merge of `point` into `child`."""
    if name == "copying the point":
        # The copy has begun: its process runs and its file exists (not only spawned).
        return lambda: (
            bool(_procs("cp", ".merge-", ".base"))
            and any(Path(child[0]).parent.glob(".merge-*.disk0.base"))
        )
    if name == "committing":
        return lambda: bool(_procs("qemu-img", "commit", ".merge-"))
    # disk0 renamed into place (it no longer backs onto the point), disk1 not yet.
    return lambda: backing_of(child[0]) is None and backing_of(child[1]) == point[1]


def _hub_toml(tmp_path: Path, work: Path, node_url: str) -> tuple[Path, str, str]:
    raw, tokens = hub_config(tmp_path, free_port_range(4), node_url)
    raw["repository"]["path"] = str(work / "repository")
    raw["state"]["db"] = str(work / "state" / "hub.db")
    raw["nodes"]["node1"]["policies"] = {POLICY: {"vms": ["big01"], "keep_last": 1,
        "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}}  # fmt: skip
    config = tmp_path / "hub.toml"
    config.write_text(toml(raw))
    return config, f"http://{raw['api']['listen']}", tokens["admin"]


def _reads_as_recorded(record: dict[str, Any]) -> None:
    """The hub's own verify code (hub/verify.py) on each disk, against the record."""
    for d in record["disk_results"]:
        assert verify_chain(d["qcow2_path"], d["capacity"]) == d["checksum"], d["qcow2_path"]


@pytest.mark.parametrize("instant", ["copying the point", "committing", "disk0 renamed"])
async def test_a_hub_killed_mid_merge_loses_nothing_and_its_restart_finishes_the_merge(
    chain_on_disk, tmp_path, instant
):
    work, full, inc = chain_on_disk["work"], chain_on_disk["full"], chain_on_disk["inc"]
    raws = chain_on_disk["raws"]
    db = work / "state" / "hub.db"
    child = [d["qcow2_path"] for d in inc["disk_results"]]
    point = [d["qcow2_path"] for d in full["disk_results"]]
    async with NodeServer(token="") as node:
        config, url, admin = _hub_toml(tmp_path, work, node.url)
        hub = HubProcess(config, url, admin)
        await hub.start()
        try:
            pruning = asyncio.create_task(hub.call("POST", "/api/v1/prune", {}))
            await _until(_instant(instant, child, point), instant)
            assert await hub.stop(signal.SIGKILL) == -signal.SIGKILL
            with pytest.raises(Exception):  # noqa: B017 - the connection died with the hub
                await pruning
            assert _journal(db) == [(full["id"], inc["id"])]
            if instant != "disk0 renamed":
                assert merge_leftovers(work / "repository"), "killed before any temporary file"
            # The merge's own helpers died with the hub (no orphan writing a temp file).
            await _until(lambda: not _procs(".merge-"), "the end of its helper processes", 30)

            # Nothing a remaining point reads was touched: both still read as before
            # and match their recorded checksums, the child's disks whichever state.
            same_as_copies(raws)
            for record in (full, inc):
                await asyncio.to_thread(_reads_as_recorded, record)

            await hub.start()
            await _until(lambda: not _journal(db), "its end after the restart", 300)
            code, run = await hub.call("POST", "/api/v1/prune", {})
            assert code == 200 and run["status"] == "completed", run
            assert run["points_removed"] == 0, run
            code, body = await hub.call("GET", f"/api/v1/backups/{full['id']}")
            assert code == 404, body
            code, now = await hub.call("GET", f"/api/v1/backups/{inc['id']}")
            assert code == 200 and now["parent"] is None, now
            code, verified = await hub.call("POST", f"/api/v1/backups/{inc['id']}/verify", {})
            assert code == 200 and verified["ok"], verified
            assert await hub.stop() == 0
        finally:
            if hub.proc is not None and hub.proc.returncode is None:
                await hub.stop(signal.SIGKILL)
    same_as_copies({Path(c): raws[Path(c)] for c in child})
    for c in child:
        assert await asyncio.to_thread(backing_of, c) is None
        await asyncio.to_thread(check_clean, Path(c))
    store = Store(db)
    try:
        await check_chain(store, inc["id"])
    finally:
        store.close()
    assert not Path(point[0]).parent.exists()
    assert merge_leftovers(work / "repository") == []
    assert qemu_nbd_under(work) == []
