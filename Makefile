# One command each on a fresh machine: `make workbook` (run every notebook) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
COURSE := $(VENV)/.course-installed
QUICK  ?=

.PHONY: setup setup-browser setup-course workbook student test bench lab clean

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

# The course extra: nbgrader (Python >= 3.11), which writes the student versions.
setup-course: $(COURSE)

$(COURSE): $(STAMP)
	$(BIN)/pip install -q -e '.[dev,course]'
	touch $(COURSE)

workbook: setup
	$(BIN)/python -m xailab.workbook $(if $(QUICK),--quick) --out build

# Student versions of the notebooks with exercises: solutions and hidden tests removed by nbgrader.
student: setup-course
	$(BIN)/python -m xailab.course student --out build/student

# With the course extra installed the exercise tests (tests/test_course.py) run instead of skipping.
test: setup-course
	$(BIN)/python -m pytest -q

bench: setup
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lab: setup
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf build .pytest_cache
