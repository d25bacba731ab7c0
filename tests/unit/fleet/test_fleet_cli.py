"""`python -m tests.fleet`: its arguments, checked before any container exists."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fleet import __main__ as cli

ROOT = Path(__file__).resolve().parents[3]


def fleet(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.fleet", *argv], capture_output=True, text=True, cwd=ROOT
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--nodes", "1"], "run needs at least 2 nodes"),
        (["run", "--nodes", "0"], "nodes must be 1-99, not 0"),
        (["run", "--nodes", "3", "--hubs", "4"], "hubs must be 1-3"),
        (["run", "--forks", "0"], "forks must be at least 1, not 0"),
        (["run", "--nodes", "many"], "invalid int value: 'many'"),
        (["inventory", "--keep"], "unrecognized arguments: --keep"),
        (["run", "--batches", "1,0"], "a batch is a count or a percentage, not '0'"),
        (["run", "--batches", "1,150%"], "not '150%'"),
        (["run", "--batches", "1,,5"], "not ''"),
        ([], "the following arguments are required: command"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(argv, message, monkeypatch, capsys):
    # Nothing may start: a run that got past its arguments would create containers.
    monkeypatch.setattr(cli, "run", lambda options: pytest.fail(f"ran with {options}"))
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_the_module_exits_2_naming_the_problem():
    done = fleet("run", "--nodes", "3", "--hubs", "4")
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.endswith("hubs must be 1-3 (a node each at least), not 4"), done.stderr


def test_inventory_writes_the_hosts_file_it_prints(tmp_path):
    done = fleet("inventory", "--nodes", "4", "--workdir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    printed = Path(done.stdout.strip())
    assert printed == tmp_path / "inventory" / "hosts.yml"
    assert "sds-node-04" in printed.read_text()


def test_run_hands_its_options_over(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(cli, "run", lambda options: seen.append(options) or 0)
    argv = ["run", "--nodes", "5", "--forks", "7", "--workdir", str(tmp_path), "--keep"]
    assert cli.main([*argv, "--batches", "1,25%,100%"]) == 0
    assert cli.main(["run", "--reuse"]) == 0
    options, defaults = seen
    assert (options.plan.nodes, options.plan.hubs, options.forks) == (5, 1, 7)
    assert (options.workdir, options.keep, options.reuse) == (tmp_path, True, False)
    # As Ansible's serial takes them: counts as numbers, percentages as strings.
    assert options.batches == [1, "25%", "100%"]
    assert (defaults.plan.nodes, defaults.forks, defaults.batches) == (20, 10, None)
    assert (defaults.reuse, defaults.keep) == (True, False)
