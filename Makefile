# Sendense appliance bundle. `make demo` and `make test` are the two commands a
# fresh Debian 12 machine needs; both run `make setup` first.
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
export PATH := $(BIN):$(PATH)
export CONTAINERS_CONF := $(CURDIR)/files/lab/containers.conf
export ANSIBLE_ROLES_PATH := $(CURDIR)/roles
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
MOLECULE_SCENARIOS := default fleet

.PHONY: setup test lint unit integration molecule demo bench lab-up lab-down fleet-scale fleet-scale-down release clean

setup:
	@bash files/scripts/setup.sh

lint: setup
	$(BIN)/ruff check sendense_tools tests bench
	$(BIN)/ruff format --check sendense_tools tests bench
	$(BIN)/yamllint -s .
	$(BIN)/ansible-lint --profile production --offline -q

unit: setup
	$(BIN)/pytest -q tests/unit

integration: setup
	$(BIN)/pytest -q tests/integration

# Each scenario builds the wheelhouse from this checkout (playbooks/wheelhouse.yml)
# and leaves no container or network behind (its test sequence ends with destroy).
molecule: setup
	@for s in $(MOLECULE_SCENARIOS); do \
	  start=$$(date +%s); $(BIN)/molecule test -s $$s || exit 1; \
	  echo "molecule $$s: $$(( $$(date +%s) - start )) s"; done

test: setup lint
	$(BIN)/pytest -q tests/unit tests/integration
	$(MAKE) --no-print-directory molecule

lab-up: setup
	@bash files/scripts/lab.sh up

lab-down:
	@bash files/scripts/lab.sh down

demo: setup
	@bash files/scripts/demo.sh

# 20 sites on one hub: FLEET_NODES nodes + a hub + the vCenter simulator in Podman
# (sds-*), rolled out with rollout.yml, all backing up at once; tears down after.
FLEET_NODES ?= 20
FLEET_FORKS ?= 10
FLEET_BATCHES ?=
fleet-scale: setup
	$(BIN)/python -m tests.fleet run --nodes $(FLEET_NODES) --forks $(FLEET_FORKS) \
	  $(if $(FLEET_BATCHES),--batches $(FLEET_BATCHES)) $(FLEET_ARGS)

fleet-scale-down:
	@$(BIN)/python -m tests.fleet down

# Refuses unless lint and every Molecule scenario pass; see files/scripts/release.sh.
release: setup
	@bash files/scripts/release.sh "$(VERSION)"

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf .cache dist build *.egg-info
