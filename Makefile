# One command each on a fresh machine: `make workbook` (run every notebook) and `make test`.
# Needs a Unix shell (Linux, macOS, WSL); docs/course.md gives the plain commands for Windows.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
COURSE := $(VENV)/.course-installed
QUICK  ?=

# `make ... PYTHON=python3.11` makes .venv anew when .venv holds another Python version (e.g. to get
# nbgrader, which needs 3.11, where .venv was made with 3.10). Without PYTHON on the command line,
# .venv is kept as it is.
PYVERSION = import sys; print("%d.%d" % sys.version_info[:2])
ifeq ($(origin PYTHON),command line)
ifneq ($(shell { $(PYTHON) -c '$(PYVERSION)'; } 2>/dev/null),$(shell { $(BIN)/python -c '$(PYVERSION)'; } 2>/dev/null))
NEW_VENV := --clear
endif
endif

.PHONY: setup setup-browser setup-course workbook student release test bench lab clean FORCE

setup: $(STAMP)

$(STAMP): pyproject.toml $(if $(NEW_VENV),FORCE)
	$(PYTHON) -m venv $(NEW_VENV) $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name xailab --display-name "Python (xailab)"
	touch $(STAMP)

# The browser test lane: Debian's Chromium (needs root and apt) and Playwright to drive it.
setup-browser: setup
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	$(BIN)/pip install -q -e '.[dev,browser]'

# The course extra: nbgrader, which writes the student versions. nbgrader needs Python >= 3.11; on an
# older Python the extra installs nothing, and `xailab.course check` stops here naming the command that works.
setup-course: $(COURSE)
	@$(BIN)/python -m xailab.course check

$(COURSE): $(STAMP)
	$(BIN)/pip install -q -e '.[dev,course]'
	touch $(COURSE)

workbook: setup
	$(BIN)/python -m xailab.workbook $(if $(QUICK),--quick) --out build

# Student versions of the notebooks with exercises: solutions and hidden tests removed by nbgrader.
student: setup-course
	$(BIN)/python -m xailab.course student --out build/student

# What a course publishes instead of this repository: student notebooks, package, README for students.
release: setup-course
	$(BIN)/python -m xailab.course release --out build/release

# With the course extra installed the exercise tests (tests/test_course.py) run; on Python 3.10,
# where it installs nothing, they skip and say why.
test: $(COURSE)
	$(BIN)/python -m pytest -q

bench: setup
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lab: setup
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf build .pytest_cache

FORCE:
