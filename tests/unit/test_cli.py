import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sendense_tools", *args], capture_output=True, text=True
    )


def test_help_lists_every_component():
    r = run("--help")
    assert r.returncode == 0
    for group in ("tunnel", "node", "hub", "backup", "restore"):
        assert group in r.stdout


def test_bad_usage_exits_2_with_one_line():
    r = run("no-such-command")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
