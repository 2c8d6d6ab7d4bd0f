# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test typecheck bench clean debian-packages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# setup.py builds the state tree's native part (node/chain/_merkle.c) in place, where gcc and OpenSSL's headers are
$(STAMP): $(BIN)/python pyproject.toml setup.py node/chain/_merkle.c
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: install, then start a local 4-member consortium with a light demo load (Ctrl-C stops it)
run: $(STAMP)
	$(BIN)/alliance localnet --home .localnet --fresh --load 100

## test: install with test extras and the Debian packages the tests use, then run the whole suite on both
##   cores: the in-process tests spread test by test, then the real-process ones module by module (a module's
##   consortium stays in one worker; each worker picks ports in its own range, tests/e2e/nodeproc.py)
IN_PROCESS_TESTS := tests/sim tests/consensus tests/storage tests/node tests/shell
test: debian-packages $(STAMP)
	$(BIN)/mypy
	$(BIN)/pytest -q -n 2 $(IN_PROCESS_TESTS)
	$(BIN)/pytest -q -n 2 --dist loadfile $(addprefix --ignore=,$(IN_PROCESS_TESTS))

## bench: a 4-member consortium under as much load as it takes, for 60 s; one JSON line of figures
bench: $(STAMP)
	$(BIN)/alliance bench --duration 60

## debian-packages: promtool, systemd-analyze, ip, curl, openssl, chromium and its driver, gcc and OpenSSL's
##   headers (the native state tree), where missing
debian-packages:
	@bash .ci/debian-packages

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .localnet .pytest_cache .mypy_cache .hypothesis
