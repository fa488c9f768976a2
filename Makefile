# Every target sets itself up from nothing: uv (installed into .tools/ if missing), the .venv
# synced from uv.lock, the database migrated by the service itself.
SHELL := /bin/bash
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV := .venv
BIN := $(VENV)/bin
export UV_PYTHON_DOWNLOADS := never

.PHONY: run test demo lint hooks format typecheck bench bench-api venv runtime tools clean

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	@touch $@ $(VENV)/.synced-runtime

# What serving needs, and nothing of the tools (pytest, playwright, mypy, moto...); a .venv
# that has them already keeps them (--inexact).
$(VENV)/.synced-runtime: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --no-dev --inexact
	@touch $@

venv: $(VENV)/.synced

runtime: $(VENV)/.synced-runtime

run: runtime
	$(BIN)/backup-monitor serve

demo: runtime
	$(BIN)/backup-monitor demo

# Tools the tests drive: Debian's Chromium (the dashboard's browser tests), promtool (from
# Debian's prometheus package: `promtool check rules` and `promtool test rules` on
# deploy/prometheus/alerts.yml and alerts.test.yml), and
# podman, runc and debootstrap (tests/container: the image built on a local Debian base and run),
# and the remote sources' real peers (tests/peers.py): restic and borg (Debian's restic and
# borgbackup), OpenSSH's sshd (openssh-server; it lives in /usr/sbin, often not on a user's PATH)
# and ssh-keygen, ssh, sftp (openssh-client). The S3 peer is moto's server, a dev dependency.
# systemd-analyze (Debian's systemd) verifies deploy/systemd/backup-monitor.service; the
# Kubernetes manifests' validators (kubernetes-validate, and the Prometheus Operator's CRD
# models of cloudcoil-models-prometheus-operator) are dev dependencies.
# Each is installed when missing and possible (root with apt-get); otherwise its tests skip,
# saying why (under CI=true they fail instead).
TOOLS := chromium:chromium,fonts-liberation promtool:prometheus podman:podman runc:runc \
	debootstrap:debootstrap restic:restic borg:borgbackup sshd:openssh-server \
	ssh-keygen:openssh-client systemd-analyze:systemd

tools:
	@for pair in $(TOOLS); do \
	  command=$${pair%%:*}; packages=$${pair#*:}; package=$${packages//,/ }; \
	  { command -v $$command || test -x /usr/sbin/$$command; } >/dev/null 2>&1 && continue; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $$package for the tests (apt-get)"; \
	    apt-get install -y -q --no-install-recommends $$package >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null 2>&1 && \
	        apt-get install -y -q --no-install-recommends $$package >/dev/null 2>&1; } || \
	      echo "could not install $$package: the tests that need $$command will skip"; \
	  else echo "$$command is missing and cannot be installed here: the tests that need it will skip"; fi; \
	done

# The static checks first: they take seconds (mypy's cache warm) and fail before the suite does.
test: lint tools
	$(BIN)/pytest

# What the pre-commit hook checks (.pre-commit-config.yaml; keep the two lists the same), run
# here directly so that a fresh clone needs no git hook and nothing downloaded. Squawk reads the
# PostgreSQL SQL of every migration (.ci/squawk_migrations.py).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile
	$(BIN)/python .ci/squawk_migrations.py

# The git hook: the checks above on the files of each commit, with the tools of .venv.
hooks: venv
	$(BIN)/pre-commit install

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: venv
	$(BIN)/mypy

bench: venv
	$(BIN)/python bench/scan.py

bench-api: venv
	$(BIN)/python bench/api.py

clean:
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache .mypy_cache
