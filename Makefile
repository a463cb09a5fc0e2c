# One command each on a fresh machine: `make workbook` (run every notebook) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
QUICK  ?=

.PHONY: setup setup-browser workbook test bench lab clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name xailab --display-name "Python (xailab)"
	touch $(STAMP)

# The browser test lane: Debian's Chromium (needs root and apt) and Playwright to drive it.
setup-browser: setup
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	$(BIN)/pip install -q -e '.[dev,browser]'

workbook: setup
	$(BIN)/python -m xailab.workbook $(if $(QUICK),--quick) --out build

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lab: setup
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf build .pytest_cache
