"""The README's alert rules, read from the README itself, as Prometheus's own promtool
checks and evaluates them against series shaped like the hub's /metrics."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.promtool import promtool

README = Path(__file__).resolve().parents[3] / "README.md"
RULES = re.compile(r"<!-- sendense-alert-rules -->\n```yaml\n(.*?)```", re.S)

# Series over 40 one-minute steps: VM "late" is 100000 s old and growing past its
# 90000 s allowance; "fresh" is well inside it; "byhand" has no policy, so no
# allowance; hub1's repository is 90% full, hub2's half.
UNIT_TEST = """
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'sendense_vm_last_backup_age_seconds{node="n1",vm="late",policy="nightly"}'
        values: '100000+60x40'
      - series: 'sendense_vm_backup_max_age_seconds{node="n1",vm="late",policy="nightly"}'
        values: '90000x40'
      - series: 'sendense_vm_last_backup_age_seconds{node="n1",vm="fresh",policy="nightly"}'
        values: '100+60x40'
      - series: 'sendense_vm_backup_max_age_seconds{node="n1",vm="fresh",policy="nightly"}'
        values: '90000x40'
      - series: 'sendense_vm_last_backup_age_seconds{node="n2",vm="byhand",policy=""}'
        values: '9999999x40'
      - series: 'sendense_repository_used_bytes{instance="hub1:8082"}'
        values: '90x40'
      - series: 'sendense_repository_size_bytes{instance="hub1:8082"}'
        values: '100x40'
      - series: 'sendense_repository_used_bytes{instance="hub2:8082"}'
        values: '50x40'
      - series: 'sendense_repository_size_bytes{instance="hub2:8082"}'
        values: '100x40'
    alert_rule_test:
      - eval_time: 10m
        alertname: SendenseBackupOverdue
        exp_alerts: []
      - eval_time: 20m
        alertname: SendenseBackupOverdue
        exp_alerts:
          - exp_labels: {severity: critical, node: n1, vm: late, policy: nightly}
            exp_annotations:
              summary: >-
                VM late on node n1 has no completed backup for 1d 4h 6m 40s (policy nightly)
      - eval_time: 20m
        alertname: SendenseRepositoryAlmostFull
        exp_alerts: []
      - eval_time: 35m
        alertname: SendenseRepositoryAlmostFull
        exp_alerts:
          - exp_labels: {severity: warning, instance: "hub1:8082"}
            exp_annotations:
              summary: "Sendense hub hub1:8082: repository 90% full"
"""


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    found = RULES.search(README.read_text())
    assert found, "README.md has no <!-- sendense-alert-rules --> yaml block"
    path = tmp_path / "rules.yml"
    path.write_text(found.group(1))
    return path


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_promtool_accepts_the_readme_rules(rules):
    done = run(promtool(), "check", "rules", str(rules), cwd=rules.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 2 rules found" in done.stdout


def test_the_rules_fire_for_a_late_vm_and_a_full_repository_only(rules):
    (rules.parent / "test.yml").write_text(UNIT_TEST)
    done = run(promtool(), "test", "rules", "test.yml", cwd=rules.parent)
    assert done.returncode == 0, done.stdout + done.stderr
