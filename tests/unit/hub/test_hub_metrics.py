"""The /metrics text, read back by prometheus_client's parser and linted by promtool
(implementations of the format nobody here wrote)."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sendense_tools.hub.allocator import PoolMetrics
from sendense_tools.hub.metric_rows import JOB_STATUSES, PruneTotals
from sendense_tools.hub.metrics import Scrape, prometheus
from sendense_tools.hub.vmstats import RepositoryFigures, VmFigures
from tests.fixtures.promtool import LEGACY, metrics_problems

NOW = 1_796_119_200.0  # 2026-12-01T10:00:00Z
NASTY = ['web"01', "back\\slash", "two\nlines", "Übersicht-日本", 'all "\\\n" of them']

CONTRACT = {
    "sendense_vm_last_backup_timestamp_seconds": ("gauge", {"node", "vm", "policy"}),
    "sendense_vm_last_backup_age_seconds": ("gauge", {"node", "vm", "policy"}),
    "sendense_vm_backup_max_age_seconds": ("gauge", {"node", "vm", "policy"}),
    "sendense_vm_restore_points": ("gauge", {"node", "vm"}),
    "sendense_vm_stored_bytes": ("gauge", {"node", "vm"}),
    "sendense_repository_size_bytes": ("gauge", set()),
    "sendense_repository_used_bytes": ("gauge", set()),
    "sendense_repository_free_bytes": ("gauge", set()),
    "sendense_jobs": ("gauge", {"kind", "status"}),
    # The parser names a counter's family without its _total.
    "sendense_prune_runs": ("counter", {"status", "dry_run"}),
    "sendense_prune_points_removed": ("counter", set()),
    "sendense_prune_merged_bytes": ("counter", set()),
    "sendense_prune_last_run_timestamp_seconds": ("gauge", set()),
}


def vm(name: str, **kw) -> VmFigures:
    given = {"node": "n1", "vm": name, "policy": "nightly", "points": 3,
             "last_finished_at": NOW - 600, "stored_bytes": 12288, "max_age": 91800.0}  # fmt: skip
    return VmFigures(**{**given, **kw})


def scrape(**kw) -> Scrape:
    given = {
        "hub": PoolMetrics(total=202, allocated=3, available=199),
        "nodes": {"a": PoolMetrics(101, 3, 98), "b": PoolMetrics(101, 0, 101)},
        "processes": 3,
        "max_exports": 404,
        "jobs": {(k, s): 0 for k in ("backup", "restore") for s in JOB_STATUSES}
        | {("backup", "completed"): 4, ("backup", "failed"): 1, ("restore", "running"): 1},
        "vms": [vm("web01"), vm("db01", node="n2", policy="", max_age=None)],
        "repository": RepositoryFigures(size=1000, used=900, free=40),
        "prune": PruneTotals(
            {
                ("completed", False): 2,
                ("completed", True): 5,
                ("failed", False): 1,
                ("failed", True): 0,
            },
            points_removed=7,
            merged_bytes=3 << 20,
            last_finished_at="2026-12-01T09:00:00+00:00",
        ),
        "now": NOW,
    }
    return Scrape(**{**given, **kw})


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def values(family) -> dict[tuple, float]:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples}


def test_every_contract_series_has_help_type_and_one_sample_per_label_set():
    parsed = families(prometheus(scrape()))
    for name, (kind, labels) in CONTRACT.items():
        family = parsed[name]
        assert family.type == kind, name
        assert family.documentation, name
        keys = [tuple(sorted(s.labels.items())) for s in family.samples]
        assert len(keys) == len(set(keys)), f"{name}: a label set twice"
        assert all(set(s.labels) == labels for s in family.samples), name
    for family in parsed.values():
        assert family.documentation and family.type in ("gauge", "counter"), family.name


def test_values_are_the_figures_given():
    parsed = families(prometheus(scrape()))
    web = (("node", "n1"), ("policy", "nightly"), ("vm", "web01"))
    assert values(parsed["sendense_vm_last_backup_timestamp_seconds"])[web] == NOW - 600
    assert values(parsed["sendense_vm_last_backup_age_seconds"])[web] == 600
    # db01 has no configured policy: no allowance, and its policy label is empty.
    assert values(parsed["sendense_vm_backup_max_age_seconds"]) == {web: 91800}
    db = (("node", "n2"), ("policy", ""), ("vm", "db01"))
    assert db in values(parsed["sendense_vm_last_backup_age_seconds"])
    assert values(parsed["sendense_vm_restore_points"])[(("node", "n1"), ("vm", "web01"))] == 3
    assert values(parsed["sendense_repository_used_bytes"]) == {(): 900}
    assert values(parsed["sendense_repository_free_bytes"]) == {(): 40}
    assert values(parsed["sendense_jobs"])[(("kind", "backup"), ("status", "completed"))] == 4
    assert values(parsed["sendense_jobs"])[(("kind", "restore"), ("status", "pending"))] == 0
    assert values(parsed["sendense_hub_backups"])[(("status", "failed"),)] == 1
    runs = values(parsed["sendense_prune_runs"])
    assert runs[(("dry_run", "true"), ("status", "completed"))] == 5
    assert runs[(("dry_run", "false"), ("status", "failed"))] == 1
    assert values(parsed["sendense_prune_merged_bytes"]) == {(): 3 << 20}
    assert values(parsed["sendense_prune_last_run_timestamp_seconds"]) == {(): NOW - 3600}
    available = values(parsed["sendense_hub_nbd_ports_available"])
    assert available == {(): 199, (("node", "a"),): 98, (("node", "b"),): 101}


def test_label_values_round_trip_whatever_they_hold():
    text = prometheus(scrape(vms=[vm(name) for name in NASTY]))
    parsed = families(text)
    for name in ("sendense_vm_last_backup_age_seconds", "sendense_vm_stored_bytes"):
        assert sorted(s.labels["vm"] for s in parsed[name].samples) == sorted(NASTY)
    # One line per sample: the newline inside a name is escaped, not written.
    assert sum(line.startswith("sendense_vm_stored_bytes{") for line in text.splitlines()) == 5


def test_an_unknown_value_is_left_out_never_nan():
    text = prometheus(
        scrape(
            vms=[vm("new", last_finished_at=None, max_age=None)],
            repository=None,
            prune=PruneTotals({}, 0, 0, None),
        )
    )
    parsed = families(text)
    for name in (
        "sendense_vm_last_backup_timestamp_seconds",
        "sendense_vm_last_backup_age_seconds",
        "sendense_vm_backup_max_age_seconds",
        "sendense_repository_size_bytes",
        "sendense_prune_last_run_timestamp_seconds",
    ):
        assert parsed[name].samples == [], name
    assert values(parsed["sendense_vm_restore_points"]) == {(("node", "n1"), ("vm", "new")): 3}
    assert not any(math.isnan(s.value) for f in parsed.values() for s in f.samples)
    assert "NaN" not in text


def test_promtool_finds_nothing_but_the_gauge_named_before_the_rules():
    assert metrics_problems(prometheus(scrape(vms=[vm(name) for name in NASTY]))) == LEGACY


@pytest.mark.parametrize("value", [0, 7, 2.5, 1e15])
def test_numbers_are_written_as_prometheus_reads_them(value):
    parsed = families(prometheus(scrape(processes=value)))
    assert values(parsed["sendense_hub_qemu_nbd_processes"]) == {(): value}
