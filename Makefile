# Two commands do all the set-up on a fresh machine:
#   make run   - create .venv if missing, install pinned dependencies, run `dvc repro`
#   make test  - the same install, then the test suite (with CI=true, also
#                `make browser` first: the browser tests must run in CI)
VENV    := .venv
BIN     := $(abspath $(VENV))/bin
STAMP   := $(VENV)/.installed
PYTHON  ?= python3
# Stage commands in dvc.yaml call `python`: make it the venv's.
export PATH := $(BIN):$(PATH)
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: run faces test install browser lock contact-sheet remote server deploy worker dask-scheduler dask-worker

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/dvc repro

# A profile as a DVC experiment (README "Real pictures: the faces profile").
PROFILE ?= profiles/faces.yaml
faces: $(STAMP)
	args=$$($(BIN)/python -m pipeline.params_file --set-args $(PROFILE)) && \
	  $(BIN)/dvc exp run -n $(basename $(notdir $(PROFILE))) $$args

test: $(STAMP) $(if $(filter true,$(CI)),browser)
	$(BIN)/python -m pytest -q

# Debian's chromium and its matching chromedriver, for the tests that drive a real
# browser (tests/browser.py). Installs them only when missing; needs apt-get and root
# (or sudo). Without them those tests skip with a reason, except in CI where they fail.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
	  echo "browser: $$(command -v chromium), $$(command -v chromedriver)"; \
	else \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq \
	    chromium chromium-driver >/dev/null && \
	  echo "browser: installed $$(chromium --version 2>/dev/null)"; \
	fi

# Re-resolve requirements.in into requirements.lock (maintainers only).
lock:
	rm -rf /tmp/s2p-lock && $(PYTHON) -m venv /tmp/s2p-lock
	/tmp/s2p-lock/bin/pip install -q -r requirements.in
	/tmp/s2p-lock/bin/pip freeze --exclude-editable > requirements.lock

contact-sheet: $(STAMP)
	$(BIN)/python scripts/contact_sheet.py --count 48 --size 128 --out contact_sheet.png

# Orchestration helpers (README "Scheduling and scale-out"). PREFECT_API_URL is
# not exported globally: `make run` must work with no server running.
# Everything binds loopback: a Dask scheduler runs the code anyone who reaches it
# sends (README "Reliability" says how to expose one safely).
PREFECT_PORT ?= 4200
PREFECT_API  ?= http://127.0.0.1:$(PREFECT_PORT)/api
DVC_REMOTE   ?= ../s2p-dvc-remote
DASK_HOST    ?= 127.0.0.1
DASK_PORT    ?= 8786
DASK_DASHBOARD_PORT ?= 8787
DASK_WORKER_DASHBOARD_PORT ?= 0
DASK_ADDRESS ?= tcp://127.0.0.1:$(DASK_PORT)
DASK_SCHEDULER_PORT = $(lastword $(subst :, ,$(DASK_ADDRESS)))

remote: $(STAMP)
	scripts/dvc_remote.sh $(DVC_REMOTE)

# The UI calls the API at PREFECT_UI_API_URL: the same port, or it would call 4200.
server: $(STAMP)
	PREFECT_UI_API_URL=$(PREFECT_API) $(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

deploy: $(STAMP)
	PREFECT_API_URL=$(PREFECT_API) $(BIN)/prefect work-pool create s2p-process --type process --overwrite
	PREFECT_API_URL=$(PREFECT_API) $(BIN)/prefect --no-prompt deploy --name pipeline-local

worker: $(STAMP)
	PREFECT_API_URL=$(PREFECT_API) S2P_REPO_DIR=$(CURDIR) $(BIN)/prefect worker start --pool s2p-process

# DASK_ADDRESS, when given, sets the scheduler's port too (one variable for both
# targets); DASK_DASHBOARD_PORT the scheduler's dashboard, DASK_WORKER_DASHBOARD_PORT
# the workers' (0: any free port).
dask-scheduler: $(STAMP)
	$(BIN)/dask scheduler --host $(DASK_HOST) --port $(DASK_SCHEDULER_PORT) \
		--dashboard-address $(DASK_HOST):$(DASK_DASHBOARD_PORT)

dask-worker: $(STAMP)
	PREFECT_API_URL=$(PREFECT_API) $(BIN)/dask worker $(DASK_ADDRESS) --nworkers 2 --nthreads 1 \
		--host $(DASK_HOST) --dashboard-address $(DASK_HOST):$(DASK_WORKER_DASHBOARD_PORT)
