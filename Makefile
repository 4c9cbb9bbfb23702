# The two commands of the README:
#   make run    set up .venv with the app and start it   (ARGS="--simulate 2" to pass options)
#   make test   set up .venv with the dev extras and run every check and the whole suite
#   make bundle build the one-folder app in dist/gpuwarden/ and start it once (installer/)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
ARGS   ?=

.PHONY: run test lint screenshot bench bundle clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "gpuwarden needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.app-installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	@touch $@

# torch==2.13.0 first: the CPU wheel on disk. The [torch] extra's range then installs
# nothing more, so no multi-GB CUDA build is ever pulled.
$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev,torch]'
	@touch $(VENV)/.app-installed $@

run: $(VENV)/.app-installed
	$(BIN)/gpuwarden $(ARGS)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# llama-server is built once per machine into the user cache (about 5 minutes on 2 cores),
# and llama-cpp-python's wheel beside it (about 4 minutes; later runs only install it into
# the venv, in seconds); the real-process tests run both.
test: lint
	$(BIN)/gpuwarden setup llama-server > $(VENV)/.llama-server-path
	$(BIN)/gpuwarden setup llama-cpp-python
	GPUWARDEN_LLAMA_SERVER="$$(tail -n 1 $(VENV)/.llama-server-path)" QT_QPA_PLATFORM=offscreen \
		$(BIN)/python -m pytest

screenshot: $(VENV)/.dev-installed
	QT_QPA_PLATFORM=offscreen $(BIN)/python scripts/screenshot.py docs/screenshot.png

bench: $(VENV)/.dev-installed
	QT_QPA_PLATFORM=offscreen $(BIN)/python bench/telemetry.py

# PyInstaller from the [bundle] extra; the build (under a minute on 2 cores) replaces
# dist/gpuwarden/, then scripts/bundle_smoke.py starts it once offscreen.
$(VENV)/.bundle-installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[bundle]'
	@touch $(VENV)/.app-installed $@

bundle: $(VENV)/.bundle-installed
	$(BIN)/pyinstaller --noconfirm --clean --distpath dist --workpath build/pyinstaller \
		installer/gpuwarden.spec
	$(BIN)/python scripts/bundle_smoke.py dist/gpuwarden

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache build/pyinstaller dist/gpuwarden
