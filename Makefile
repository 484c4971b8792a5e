# The two newcomer commands (README): `make demo` and `make test`.
# Each sets up what it needs first (venv, Python deps, Debian data, Kubernetes binaries).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= runs/fmnist-quick

.PHONY: setup data kube demo test test-fast test-node crds clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/cpu.txt requirements/test.txt scripts/install-promtool.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements/cpu.txt -r requirements/test.txt
	# helm-sdkpy declares Python>=3.12 but works on 3.11 (chart tests only).
	$(BIN)/pip install -q --ignore-requires-python helm-sdkpy==0.1.32
	bash scripts/install-promtool.sh $(BIN)
	touch $@

data:
	bash scripts/install-data.sh

kube:
	bash scripts/build-kube.sh >/dev/null

demo: setup data
	$(BIN)/stepshot run examples/fmnist-quick.yaml --workdir $(WORKDIR)

test: setup data kube
	$(BIN)/pytest -q

# The end-to-end tests on a real node alone (starts it, builds and loads the images).
test-node: setup data kube
	$(BIN)/pytest -q -m node

test-fast: setup data
	STEPSHOT_SKIP_APISERVER=1 $(BIN)/pytest -q -m "not apiserver and not node"

crds: setup
	$(BIN)/python scripts/gen-crds.py

clean:
	rm -rf $(VENV) runs .pytest_cache
