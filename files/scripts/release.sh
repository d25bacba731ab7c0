#!/bin/bash
# make release VERSION=x.y.z: release the Python package and every role together.
#
#  1. refuses a VERSION that is not MAJOR.MINOR.PATCH[-alpha.N|-beta.N|-rc.N]
#     (exit 2): semver that is also a valid Python (PEP 440) version, so the
#     wheel carries the same number as the bundle;
#  2. refuses (exit 1) unless `make lint` and every Molecule scenario under
#     molecule/ pass;
#  3. sets the version in pyproject.toml, sendense_tools/__init__.py and every
#     role's meta/main.yml, and moves the "## Unreleased" notes of CHANGELOG.md
#     under "## VERSION - DATE";
#  4. builds the wheelhouse and one bundle, dist/sendense-bundle-VERSION.tar.gz,
#     that deploys from an unpacked copy on a controller with no index access.
#
# SENDENSE_RELEASE_SKIP_CHECKS=1 skips step 2. It exists for the test of the
# packaging steps (tests/integration/test_release.py, on a throwaway copy of
# the checkout); a real release never sets it.
# SENDENSE_VENV (default .venv) names the venv whose pip builds the wheelhouse
# and whose packages pin requirements-controller.txt.
set -euo pipefail

die() {
  echo "release: $2" >&2
  exit "$1"
}

VERSION=${1:-}
SEMVER='^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-(alpha|beta|rc)\.(0|[1-9][0-9]*))?$'
[[ $VERSION =~ $SEMVER ]] || die 2 "VERSION must be MAJOR.MINOR.PATCH[-alpha.N|-beta.N|-rc.N] (make release VERSION=1.2.3), got '$VERSION'"

cd "$(dirname "$0")/../.."
ROOT=$PWD
VENV=${SENDENSE_VENV:-$ROOT/.venv}
PY=$VENV/bin/python
[ -x "$PY" ] || die 1 "no venv at $VENV (run make setup)"
NAME=sendense-bundle-$VERSION
TARBALL=$ROOT/dist/$NAME.tar.gz
ROLES=()
for meta in roles/*/meta/main.yml; do ROLES+=("$(basename "$(dirname "$(dirname "$meta")")")"); done
[ ${#ROLES[@]} -gt 0 ] || die 1 "no roles under roles/"

# --- 2. the gate -------------------------------------------------------------
if [ "${SENDENSE_RELEASE_SKIP_CHECKS:-}" = 1 ]; then
  echo "release: SENDENSE_RELEASE_SKIP_CHECKS=1: lint and Molecule NOT run (packaging test only)" >&2
else
  SCENARIOS=$(for d in molecule/*/molecule.yml; do basename "$(dirname "$d")"; done | tr '\n' ' ')
  [ -n "$SCENARIOS" ] || die 1 "refused: no Molecule scenario under molecule/"
  make --no-print-directory lint || die 1 "refused: make lint failed"
  make --no-print-directory molecule MOLECULE_SCENARIOS="$SCENARIOS" || die 1 "refused: a Molecule scenario failed ($SCENARIOS)"
fi

# --- 3. versions and changelog -----------------------------------------------
PEP440=$("$PY" -c 'import sys; from packaging.version import Version; print(Version(sys.argv[1]))' "$VERSION")
DATE=$(date -u +%Y-%m-%d)
"$PY" - "$VERSION" "$PEP440" "$DATE" "${ROLES[@]}" <<'PYEOF'
import re
import sys
from pathlib import Path

version, pep440, date, *roles = sys.argv[1:]


def substitute(path: str, pattern: str, repl: str, what: str) -> None:
    text = Path(path).read_text()
    new, count = re.subn(pattern, repl, text, count=1, flags=re.M)
    if count != 1:
        sys.exit(f"release: {path}: no {what} to set")
    Path(path).write_text(new)


# [project] is pyproject's first table with a version key.
substitute("pyproject.toml", r'^version = "[^"]*"$', f'version = "{pep440}"', "version")
substitute(
    "sendense_tools/__init__.py", r'^__version__ = "[^"]*"$', f'__version__ = "{pep440}"', "__version__"
)

# ansible-core refuses unknown keys in role metadata and ansible-lint's schema
# forbids one in galaxy_info, so the version is the comment under the "---".
for role in roles:
    path = Path("roles", role, "meta", "main.yml")
    lines = [line for line in path.read_text().splitlines() if not line.startswith("# version: ")]
    at = 1 if lines and lines[0] == "---" else 0
    lines.insert(at, f"# version: {version} (sendense bundle release; set by make release)")
    path.write_text("\n".join(lines) + "\n")

log = Path("CHANGELOG.md")
text = log.read_text()
if re.search(rf"^## {re.escape(version)} - ", text, flags=re.M):
    print(f"release: CHANGELOG.md already has {version}; keeping it")
else:
    match = re.search(r"^## Unreleased[ \t]*\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    if match is None:
        sys.exit("release: CHANGELOG.md has no '## Unreleased' section")
    notes = match.group(1).strip()
    if not notes:
        sys.exit("release: CHANGELOG.md has nothing under '## Unreleased'")
    entry = f"## Unreleased\n\n## {version} - {date}\n\n{notes}\n\n"
    log.write_text(text[: match.start()] + entry + text[match.end() :])
PYEOF

# --- 4. wheelhouse and bundle --------------------------------------------------
PIP="$VENV/bin/pip" bash files/scripts/build-wheelhouse.sh
compgen -G "files/wheelhouse/sendense_tools-$PEP440-*.whl" >/dev/null || die 1 "the wheelhouse holds no sendense_tools $PEP440 wheel"

STAGE=$(mktemp -d /var/tmp/sendense-release.XXXXXX)
trap 'rm -rf "$STAGE"' EXIT
TOP=$STAGE/$NAME
mkdir -p "$TOP/inventory" "$TOP/files/wheelhouse" "$TOP/files/scripts" "$TOP/tests"

# Working-tree copies (what was linted and tested), without caches.
copy() { tar -C "$ROOT" --exclude=__pycache__ --exclude='*.pyc' -cf - "$@" | tar -C "$TOP" -xf -; }
copy ansible.cfg CHANGELOG.md roles playbooks inventory/example inventory/lab tests/infra
[ -f tests/__init__.py ] && copy tests/__init__.py
# The lab, deployable from the bundle: its image recipe, `lab.sh up|down`,
# and the vCenter simulator where the lab role looks for it (plus its source).
copy files/lab files/vcsim files/scripts/lab.sh
if [ -x .cache/bin/vcsim-lab ]; then
  copy .cache/bin/vcsim-lab
else
  echo "release: warning: .cache/bin/vcsim-lab missing (make setup builds it); the bundle cannot deploy the lab" >&2
fi
# The roles copy this one archive to every host (sendense_runtime).
cp files/wheelhouse/wheelhouse.tar "$TOP/files/wheelhouse/"
echo "$VERSION" >"$TOP/VERSION"

"$PY" - >"$TOP/requirements-controller.txt" <<'PYEOF'
from importlib.metadata import PackageNotFoundError, version

print("# The controller's tools, pinned to the versions this release was tested with:")
print("#   python3 -m venv venv && venv/bin/pip install -r requirements-controller.txt")
# ansible (not only ansible-core) bundles community.crypto, ansible.posix and
# containers.podman, which the roles and the lab use.
for name in ("ansible", "ansible-core", "pytest", "pytest-testinfra"):
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        print(name)
PYEOF

sed "s/@VERSION@/$VERSION/g" >"$TOP/README-bundle.md" <<'EOF'
# Sendense bundle @VERSION@

Everything needed to deploy Sendense @VERSION@ from a controller that has no
access to a package index: the Ansible roles and playbooks, the wheelhouse the
hosts install from (`files/wheelhouse/wheelhouse.tar`, Python 3.11 / Debian 12
x86_64), inventories, the testinfra suites and the lab.

## Check the bundle

    cd sendense-bundle-@VERSION@
    sha256sum -c --quiet SHA256SUMS

## Controller

Ansible with its bundled collections (the `ansible` package), see
`requirements-controller.txt`. Run every command from this directory, so that
`ansible.cfg` (roles path, inventory default) applies.

## Deploy a fleet

1. Copy `inventory/example` to `inventory/<yours>` and edit `hosts.yml`,
   `group_vars/` and `host_vars/` (vCenter URL, thumbprint, reverse port per node).
2. Put each secret in its `vault.yml`, then encrypt it:
   `ansible-vault encrypt inventory/<yours>/host_vars/*/vault.yml`.
3. Roll out (hubs first, then the nodes in batches with a health gate; it stops
   at the first failed batch):

       ansible-playbook -i inventory/<yours> playbooks/rollout.yml --ask-vault-pass

   `playbooks/deploy-hub.yml` and `playbooks/deploy-node.yml` (with `--limit`)
   update one part; `playbooks/site.yml` deploys everything at once.
4. Verify the deployed hosts:

       pytest tests/infra --hosts=ansible://all --ansible-inventory=inventory/<yours>

The hosts need Debian's own repositories (python3-libnbd, qemu-utils, nbdkit,
openssh); the Python package and its dependencies come from the wheelhouse,
installed with `pip --no-index`.

## The lab (Podman, on this controller)

    bash files/lab/build-image.sh        # once: the lab image
    bash files/scripts/lab.sh up
    ansible-playbook -i inventory/lab playbooks/site.yml
    ansible-playbook -i inventory/lab playbooks/backup.yml
    bash files/scripts/lab.sh down
EOF

(cd "$TOP" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum >SHA256SUMS)
mkdir -p dist
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(date +%s)}
tar -C "$STAGE" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
  -cf - "$NAME" | gzip -n >"$TARBALL.tmp"
mv "$TARBALL.tmp" "$TARBALL"
echo "release: $VERSION: $(du -h "$TARBALL" | cut -f1) dist/$NAME.tar.gz ($(wc -l <"$TOP/SHA256SUMS") files, SHA256SUMS inside)"
