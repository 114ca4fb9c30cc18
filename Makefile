# funasr-triton: `make serve` (install, prepare models, run) and `make test` (install, run all tests).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# where models come from: modelscope (real FunASR checkpoints), test (tiny random weights, offline),
# test-large (random weights with Paraformer-large sizes, for speed measurements)
MODELS  ?= modelscope
PROFILE ?= cpu
REPO    ?= model_repository
# what fills speaker_embedding: campplus (FunASR CAM++) or pyannote (pyannote.audio 3.1's WeSpeaker ResNet34)
SPEAKER_MODEL ?= campplus

# the system packages (one list, shared with .ci/run): .ci/apt-packages, {python} = this Python's version
PY_VERSION   = $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
APT_PACKAGES = $(strip $(shell sed -e 's/\#.*//' -e 's/{python}/$(PY_VERSION)/' .ci/apt-packages))
APT_INSTALL  = apt-get install -y --no-install-recommends $(APT_PACKAGES)

.PHONY: setup check-system system-packages pyannote-env models serve test e2e configs configs-check bench bench-long loadtest soak clean

setup: check-system $(VENV)/.installed

# as root with apt-get: installs what is missing; otherwise names the exact command
check-system:
	@if PYTHONPATH=frontend $(PYTHON) -m funasr_triton.doctor 2>/dev/null; then exit 0; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "make setup: installing system packages: $(APT_PACKAGES)"; \
	  $(MAKE) --no-print-directory system-packages && PYTHONPATH=frontend $(PYTHON) -m funasr_triton.doctor; \
	else PYTHONPATH=frontend $(PYTHON) -m funasr_triton.doctor; \
	  echo "install them with: sudo apt-get update && sudo $(APT_INSTALL)" >&2; exit 1; fi

system-packages:
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(APT_INSTALL) -qq

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	echo "torch==2.13.0" > $(VENV)/constraints.txt
	$(BIN)/pip install -q -c $(VENV)/constraints.txt -e '.[models,triton,export,test,bench,eval]'
	# resemblyzer pulls in webrtcvad, whose module imports pkg_resources (gone from setuptools >= 81); the same
	# module from webrtcvad-wheels must be the one on disk, whatever order pip installed the two in
	$(BIN)/pip install -q --force-reinstall --no-deps webrtcvad-wheels==2.0.14
	touch $@

# the interpreter `export --speaker-model pyannote` runs in: pyannote.audio 3.x needs torchaudio < 2.9,
# which cannot share .venv's torch pin (export/pyannote-env.sh explains); layered on .venv
pyannote-env: $(VENV)/pyannote/.installed

$(VENV)/pyannote/.installed: $(VENV)/.installed export/requirements-pyannote.txt export/pyannote-env.sh
	bash export/pyannote-env.sh $(VENV)
	touch $@

# export writes the repository skeleton (configs, code) and the weights; the weights of a stage already exported
# for the same request (MODELS, SPEAKER_MODEL, --quantize; MANIFEST.json records it) are reused, so this is quick
models: setup $(if $(filter pyannote,$(SPEAKER_MODEL)),pyannote-env)
	$(BIN)/funasr-triton export --source $(MODELS) --speaker-model $(SPEAKER_MODEL) --quantize --repository $(REPO)

# embedded Triton (gRPC 8001, metrics 8002, HTTP 8003) + the HTTP frontend on port 8000;
# PROFILE=auto picks the GPU profile that fits the memory nvidia-smi reports, or cpu (and logs the choice)
serve: models
	$(BIN)/funasr-triton serve --profile $(PROFILE) --model-repository $(REPO)

test: setup pyannote-env
	$(BIN)/python -m pytest -q tests

# the docker-compose CPU stack end to end (builds the images; needs root for apt/dockerd): .ci/e2e explains
e2e: setup
	E2E_PYTHON=$(abspath $(BIN))/python .ci/e2e

# <model>/configs/<profile>.pbtxt from the templates (<model>/configs/*.pbtxt.in) and the profile table
# (frontend/funasr_triton/profiles.py); configs-check fails when a committed file differs from its rendering
configs:
	PYTHONPATH=frontend $(PYTHON) -m funasr_triton.profiles render
configs-check:
	PYTHONPATH=frontend $(PYTHON) -m funasr_triton.profiles render --check

bench: setup
	$(BIN)/funasr-triton bench --output-dir bench/results

# long recordings only (10 min and 1 h vs the baselines, memory at 10 min / 1 h / 4 h and 4 x 1 h): about 20 min on an idle 2-core machine
bench-long: setup
	$(BIN)/funasr-triton bench --long-only --output-dir bench/results

# headless locust against a running stack (`make serve`): CSV + summary.json/summary.md in loadtest/results/<stamp>
USERS    ?= 4
SPAWN    ?= 2
RUN_TIME ?= 60s
HOST     ?= http://127.0.0.1:8000
TRITON   ?= 127.0.0.1:8001
loadtest: setup
	$(BIN)/python -m loadtest.run --users $(USERS) --spawn-rate $(SPAWN) --run-time $(RUN_TIME) \
	  --host $(HOST) --triton $(TRITON) --out loadtest/results/$$(date +%Y%m%d-%H%M%S)

# mixed traffic on every surface (OpenAI, Aliyun REST, /api, FunASR + NLS WebSocket streams, Triton gRPC) against a
# running stack (`make serve`) for SOAK_DURATION: errors, latency, RSS of the frontend and of the Triton tree;
# passes with 0 errors and RSS growth < 5 % after warm-up; JSON + markdown in loadtest/results/soak-<stamp>
SOAK_DURATION    ?= 30m
SOAK_CONCURRENCY ?= 3
soak: setup
	$(BIN)/python -m loadtest.soak --host $(HOST) --triton $(TRITON) --duration $(SOAK_DURATION) \
	  --concurrency $(SOAK_CONCURRENCY) --out loadtest/results/soak-$$(date +%Y%m%d-%H%M%S)

clean:
	rm -rf $(VENV) .cache .pytest_cache
