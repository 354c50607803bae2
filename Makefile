# Two commands do all the set-up on a fresh machine:
#   make run   - create .venv if missing, install pinned dependencies, run `dvc repro`
#   make test  - the same install, then the test suite
VENV    := .venv
BIN     := $(abspath $(VENV))/bin
STAMP   := $(VENV)/.installed
PYTHON  ?= python3
# Stage commands in dvc.yaml call `python`: make it the venv's.
export PATH := $(BIN):$(PATH)
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: run test install lock contact-sheet remote clean-data

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/dvc repro

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Re-resolve requirements.in into requirements.lock (maintainers only).
lock:
	rm -rf /tmp/s2p-lock && $(PYTHON) -m venv /tmp/s2p-lock
	/tmp/s2p-lock/bin/pip install -q -r requirements.in
	/tmp/s2p-lock/bin/pip freeze --exclude-editable > requirements.lock

contact-sheet: $(STAMP)
	$(BIN)/python scripts/contact_sheet.py --count 48 --size 128 --out contact_sheet.png
