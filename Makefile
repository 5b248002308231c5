# One entry point for people and CI. Everything installs itself on first use, cached in .local/.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
export UV_CACHE_DIR := $(CURDIR)/.local/uv-cache
# Machines without GitHub build DocumentDB's pinned sources from the team's offline mirror
# beside the repo, when it is there (as .ci/run does); a value given in the environment wins.
MIRROR := $(abspath $(CURDIR)/../shared/vendor/local-server)
ifeq ($(origin CONTACTS_STACK_SOURCES_MIRROR),undefined)
ifneq ($(wildcard $(MIRROR)),)
export CONTACTS_STACK_SOURCES_MIRROR := $(MIRROR)
endif
endif
UV_HOME := $(CURDIR)/.local/uv
UV := $(UV_HOME)/bin/uv
PY_SOURCES := shared/src services/profile-svc/src services/contact-svc/src services/import-svc/src services/log-svc/src services/segment-svc/src services/console/src deploy/local/src
PYTEST := $(UV) run --frozen pytest

.PHONY: help setup run stop status test lint fmt unit integration e2e bench bench-scale bench-import bench-import-memory bench-segments bench-profile-list catalogue screenshots clean

help:
	@echo "make run    start Kafka, the local MongoDB server and every service (installs on first use)"
	@echo "make stop   stop what 'make run' started"
	@echo "make test   lint, then unit, integration and end-to-end tests on the real stack"
	@echo "make lint | fmt | unit | integration | e2e | bench | bench-scale | bench-import | bench-import-memory | bench-segments | bench-profile-list | catalogue | screenshots | status"

# uv itself, pinned, in a private virtualenv so the machine's Python stays untouched.
$(UV):
	python3 -m venv $(UV_HOME)
	$(UV_HOME)/bin/pip install --quiet --disable-pip-version-check "uv==0.13.9"

# Debian's Chromium for the browser test of the API docs: Playwright drives this binary and
# never downloads a browser of its own. Installed once; when it is there, nothing runs.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@[ "$$(id -u)" = 0 ] || { echo "as root: apt-get install --no-install-recommends chromium" >&2; exit 1; }
	@echo "installing Debian's chromium for the browser tests"
	@export DEBIAN_FRONTEND=noninteractive; \
	install="apt-get install -y -qq --no-install-recommends chromium"; \
	$$install >/dev/null || { apt-get update -qq && $$install >/dev/null; }

# Debian's promtool (package prometheus) for the test of the alert rules in deploy/monitoring:
# installed once, as chromium is; when it is there, nothing runs.
PROMTOOL := /usr/bin/promtool
$(PROMTOOL):
	@[ "$$(id -u)" = 0 ] || { echo "as root: apt-get install --no-install-recommends prometheus" >&2; exit 1; }
	@echo "installing Debian's prometheus for promtool"
	@export DEBIAN_FRONTEND=noninteractive; \
	install="apt-get install -y -qq --no-install-recommends prometheus"; \
	$$install >/dev/null || { apt-get update -qq && $$install >/dev/null; }

# axe-core for the browser tests' accessibility checks, pinned by tests/browser's lock file.
AXE := .local/browser/node_modules/axe-core/axe.min.js
$(AXE): tests/browser/package.json tests/browser/package-lock.json
	mkdir -p .local/browser
	cp tests/browser/package.json tests/browser/package-lock.json .local/browser/
	npm ci --prefix .local/browser --ignore-scripts --no-audit --no-fund --silent
	touch $@

setup: $(UV) $(CHROMIUM) $(PROMTOOL) $(AXE)
	$(UV) sync --frozen --quiet

run: setup
	$(UV) run --frozen devstack up --services

stop: setup
	$(UV) run --frozen devstack down

status: setup
	$(UV) run --frozen devstack status

lint: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy $(PY_SOURCES)

fmt: setup
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

unit: setup
	$(PYTEST) -m "not integration" shared services tests/devstack tests/deploy

integration: setup
	$(PYTEST) -m integration shared services

e2e: setup
	$(PYTEST) tests/e2e

test: lint
	$(PYTEST) shared services tests

bench: setup
	$(UV) run --frozen python bench/profile_events.py
	$(UV) run --frozen python bench/webhook_ingest.py
	$(UV) run --frozen python bench/store_deliveries.py

# Reads on one large profile; loading a million contacts takes a few minutes:
# SCALE_CONTACTS=100000 for a quicker look.
SCALE_CONTACTS ?= 1000000
bench-scale: setup
	$(UV) run --frozen python bench/contacts_at_scale.py --contacts-count $(SCALE_CONTACTS)

# A CSV import of IMPORT_ROWS rows, twice (empty profile, then full); IMPORT_ROWS=100000 for
# a quicker look.
IMPORT_ROWS ?= 1000000
MEMORY_ROWS ?= 10000000
bench-import: setup
	$(UV) run --frozen python bench/import_csv.py --rows $(IMPORT_ROWS)

# import-svc's memory over one long import (MEMORY_ROWS, ten million by default); restart
# import-svc first for a clean peak.
bench-import-memory: setup
	$(UV) run --frozen python bench/import_memory.py --rows $(MEMORY_ROWS)

# Membership latency at 1,000 contact changes/s with 20 virtual profiles, then a rebuild and
# member reads over SEGMENT_MEMBERS projected contacts (SEGMENT_MEMBERS=100000 for a quicker look).
SEGMENT_MEMBERS ?= 1000000
bench-segments: setup
	$(UV) run --frozen python bench/segments.py --members $(SEGMENT_MEMBERS)

# A console's page of 50 profiles with their counts (list, then both batch statistics), on an
# account of 64 profiles, one of LIST_CONTACTS contacts (LIST_CONTACTS=100000 for a quicker look).
LIST_CONTACTS ?= 1000000
bench-profile-list: setup
	$(UV) run --frozen python bench/profile_list.py --contacts-count $(LIST_CONTACTS)

catalogue: setup
	$(UV) run --frozen python -m contacts_shared.catalogue > docs/events.md

# The console's pages at 1280x800, as its browser tests walk them, into docs/screenshots/.
screenshots: setup
	rm -rf docs/screenshots
	CONTACTS_SCREENSHOTS=$(CURDIR)/docs/screenshots $(PYTEST) -q tests/e2e/test_console.py tests/e2e/test_console_contacts.py tests/e2e/test_console_imports.py tests/e2e/test_console_virtual.py

clean: stop
	rm -rf .local
