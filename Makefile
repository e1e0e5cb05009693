# sandboxweb: `make run` starts the product, `make test` runs the whole test suite.
SHELL := /bin/bash
UV_VERSION := 0.13.8
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/var/tools/bin/uv)
BIND ?= 127.0.0.1
PORT ?= 8000
export SANDBOXWEB_BIND := $(BIND)
export SANDBOXWEB_PORT := $(PORT)

.PHONY: run test sync services lint format bench clean-sandboxes

run: sync  ## migrate, make sure Redis/Docker/image/admin exist, then serve web + worker + beat
	@$(UV) run --frozen python manage.py bootstrap --url "http://$(BIND):$(PORT)/"
	@exec $(UV) run --frozen honcho --procfile Procfile start

test: sync services  ## the whole suite against the configured database, Redis and Docker
	$(UV) run --frozen pytest $(PYTEST_ARGS)

services: sync
	@$(UV) run --frozen python manage.py bootstrap --skip-admin

sync: $(UV)
	@$(UV) sync --frozen --quiet

$(CURDIR)/var/tools/bin/uv:
	@echo "Installing uv $(UV_VERSION) into var/tools (no global changes) ..."
	@python3 -m venv var/tools && var/tools/bin/pip install --quiet "uv==$(UV_VERSION)"

lint: sync
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

format: sync
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

bench: sync services
	$(UV) run --frozen python bench/sandboxes.py
