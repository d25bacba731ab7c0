"""`make release VERSION=x.y.z` (files/scripts/release.sh), run on a throwaway copy.

The copy holds every file git knows or would add (`git ls-files`, working-tree
contents), so the real checkout is never edited. The lint/Molecule gate is skipped
with SENDENSE_RELEASE_SKIP_CHECKS=1 (Molecule runs in `make test`); the gate's
refusal is checked with a stub `make` that fails, because the real `make lint`
would run `make setup` against the copy.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)
SCRIPT = "files/scripts/release.sh"
VERSION = "7.8.9"
ROLES = sorted(p.parent.parent.name for p in (REPO / "roles").glob("*/meta/main.yml"))


def _copy_checkout(dest: Path, *, lab_binary: bool = False) -> Path:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        src = REPO / os.fsdecode(raw)
        if src.is_file():
            (dest / src.relative_to(REPO)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / src.relative_to(REPO), follow_symlinks=False)
    # Built by `make setup`, git-ignored; the bundle ships it for the lab.
    vcsim = REPO / ".cache/bin/vcsim-lab"
    if lab_binary and vcsim.exists():
        (dest / ".cache/bin").mkdir(parents=True)
        shutil.copy2(vcsim, dest / ".cache/bin/vcsim-lab")
    return dest


def _env(**extra: str) -> dict[str, str]:
    """The caller's environment without Ansible settings that point into the checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_"))}
    env["SENDENSE_VENV"] = str(VENV)
    wheels = REPO / "files/wheelhouse"
    if any(wheels.glob("*.whl")):
        # Dependencies from the checkout's wheelhouse: fast and offline.
        env |= {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)}
    return env | extra


def _release(checkout: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", SCRIPT, *args],
        cwd=checkout,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def released() -> Iterator[tuple[Path, subprocess.CompletedProcess[str]]]:
    # Not tmp_path: pytest keeps those, and this one holds a 40 MB bundle.
    with tempfile.TemporaryDirectory(prefix="sendense-release-") as tmp:
        checkout = _copy_checkout(Path(tmp), lab_binary=True)
        done = _release(checkout, VERSION, SENDENSE_RELEASE_SKIP_CHECKS="1")
        assert done.returncode == 0, done.stderr
        yield checkout, done


@pytest.fixture(scope="module")
def bundle(released) -> Iterator[Path]:
    checkout, _ = released
    # Unpacked outside the checkout, as on a controller that never saw it.
    with tempfile.TemporaryDirectory(prefix="sendense-controller-") as out:
        tarball = checkout / f"dist/sendense-bundle-{VERSION}.tar.gz"
        subprocess.run(["tar", "-xzf", str(tarball), "-C", out], check=True)
        yield Path(out)


def test_sets_the_version_everywhere(released) -> None:
    checkout, _ = released
    assert re.search(rf'^version = "{VERSION}"$', (checkout / "pyproject.toml").read_text(), re.M)
    init = (checkout / "sendense_tools/__init__.py").read_text()
    assert f'__version__ = "{VERSION}"' in init
    assert ROLES
    for role in ROLES:
        meta = (checkout / "roles" / role / "meta/main.yml").read_text()
        assert re.search(rf"^# version: {re.escape(VERSION)} ", meta, re.M), role


def test_moves_unreleased_notes_under_the_version(released) -> None:
    checkout, _ = released
    before = (REPO / "CHANGELOG.md").read_text()
    notes = re.search(r"^## Unreleased\n(.*?)(?=^## |\Z)", before, re.M | re.S).group(1).strip()
    after = (checkout / "CHANGELOG.md").read_text()
    entry = re.search(
        rf"^## {re.escape(VERSION)} - \d{{4}}-\d\d-\d\d\n(.*?)(?=^## |\Z)", after, re.M | re.S
    )
    assert entry and entry.group(1).strip() == notes
    # A fresh, empty Unreleased section above the release.
    assert re.search(rf"^## Unreleased\n\s*\n## {re.escape(VERSION)} - ", after, re.M)


def test_bundle_has_the_expected_layout(bundle: Path) -> None:
    top = bundle / f"sendense-bundle-{VERSION}"
    assert [p.name for p in bundle.iterdir()] == [top.name]
    for entry in (
        "roles",
        "playbooks/site.yml",
        "playbooks/rollout.yml",
        "ansible.cfg",
        "inventory/example/hosts.yml",
        "inventory/lab/hosts.yml",
        "files/wheelhouse/wheelhouse.tar",
        "files/scripts/lab.sh",
        "README-bundle.md",
        "requirements-controller.txt",
        "SHA256SUMS",
    ):
        assert (top / entry).exists(), entry
    assert sorted(p.name for p in (top / "roles").iterdir()) == ROLES
    # No sources: playbooks/wheelhouse.yml must not try to rebuild the wheelhouse.
    assert not (top / "pyproject.toml").exists()
    with tarfile.open(top / "files/wheelhouse/wheelhouse.tar") as wheels:
        names = wheels.getnames()
    assert f"sendense_tools-{VERSION}-py3-none-any.whl" in names


def _sha256_check(top: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=top, capture_output=True, text=True
    )


def test_sha256sums_verify_every_file(bundle: Path) -> None:
    top = bundle / f"sendense-bundle-{VERSION}"
    listed = {line.split("  ", 1)[1] for line in (top / "SHA256SUMS").read_text().splitlines()}
    present = {str(p.relative_to(top)) for p in top.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    assert listed == present
    check = subprocess.run(
        ["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=top, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # ...and it would notice a change.
    (top / "ansible.cfg").write_text((top / "ansible.cfg").read_text() + "\n")
    check = subprocess.run(
        ["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=top, capture_output=True, text=True
    )
    assert check.returncode != 0 and "ansible.cfg" in check.stdout


@pytest.mark.parametrize("playbook", ["playbooks/site.yml", "playbooks/rollout.yml"])
def test_playbooks_parse_from_the_unpacked_bundle(bundle: Path, playbook: str) -> None:
    top = bundle / f"sendense-bundle-{VERSION}"
    check = subprocess.run(
        [
            str(VENV / "bin/ansible-playbook"),
            "--syntax-check",
            "-i",
            "inventory/example",
            playbook,
        ],
        cwd=top,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("bad", ["", "1.2", "v1.2.3", "01.2.3", "1.2.3-beta", "1.2.3+build.1"])
def test_bad_version_is_refused_with_exit_2(tmp_path: Path, bad: str) -> None:
    checkout = _copy_checkout(tmp_path)
    before = (checkout / "pyproject.toml").read_text()
    done = _release(checkout, bad, SENDENSE_RELEASE_SKIP_CHECKS="1")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "VERSION" in done.stderr
    assert (checkout / "pyproject.toml").read_text() == before
    assert not (checkout / "dist").exists()


def test_refuses_when_lint_fails_stub_make(tmp_path: Path) -> None:
    checkout = _copy_checkout(tmp_path / "checkout")
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "make").write_text('#!/bin/sh\necho "make $*" >>"$0.log"\nexit 1\n')
    (stub / "make").chmod(0o755)
    before = {p: (checkout / p).read_text() for p in ("pyproject.toml", "CHANGELOG.md")}
    done = _release(checkout, VERSION, PATH=f"{stub}:{os.environ['PATH']}")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "release: refused: make lint failed"
    assert (stub / "make.log").read_text().startswith("make --no-print-directory lint")
    assert {p: (checkout / p).read_text() for p in before} == before
    assert not (checkout / "dist").exists()
