# The README's two commands: `make demo` and `make test`.
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.requirements-stamp
PYTHON  ?= python3

.PHONY: venv demo test test-postgresql clean

# Re-run maturin every time: ~2 s warm, and it picks up edits under src/ and python/.
# Its pip chatter goes to a log, shown only when it fails.
venv: $(STAMP)
	@echo "maturin develop --release"
	@env -u CONDA_PREFIX VIRTUAL_ENV="$(CURDIR)/$(VENV)" PATH="$(CURDIR)/$(VENV)/bin:$$PATH" \
		$(VENV)/bin/maturin develop --release > $(VENV)/maturin.log \
		|| { cat $(VENV)/maturin.log; exit 1; }
	@tail -n 1 $(VENV)/maturin.log

# Only when requirements-dev.txt changed (or the venv is new).
$(STAMP): requirements-dev.txt
	@if ! $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null; then \
		echo "python3 has no ensurepip: installing python3-venv"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; \
	fi
	@test -x $(PY) || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

demo: venv
	$(PY) scripts/demo.py

# cargo test must not build pyo3 as an extension module (undefined Py* symbols at link).
# pytest twice: on the SQLite store, then on PostgreSQL (skipped, saying why,
# when this machine has no PostgreSQL server binaries).
test: venv
	env -u PYO3_BUILD_EXTENSION_MODULE cargo test
	MYPYPATH=python $(PY) -m mypy.stubtest poormanci._core
	$(PY) -m pytest -q tests $(PYTEST_ARGS)
	@if reason=$$($(PY) tests/postgres.py missing); then \
		echo '$(PG_PYTEST)'; $(PG_PYTEST); \
	else \
		echo "SKIPPED the PostgreSQL pass: $$reason"; \
	fi

# The end-to-end suite on the PostgreSQL store: a private server for the
# session (tests/postgres.py), a database per state_dir; tests about the
# SQLite file itself are left out; tests/test_instances.py runs only here.
PG_PYTEST = POORMANCI_TEST_STORE=postgresql $(PY) -m pytest -q tests -m "not sqlite_only" $(PYTEST_ARGS)
test-postgresql: venv
	$(PG_PYTEST)

clean:
	rm -rf $(VENV)
