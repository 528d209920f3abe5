# Two commands do all the set-up on a fresh Debian 12 machine: `make demo` and `make test`.
# Each installs what it needs (Debian packages, a pinned virtual environment) and is idempotent.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .stamps
APT_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm iproute2
APT_RISCV := gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf
PROJECT ?= demo-project

.PHONY: setup demo test test-quick bench bench-cores bench-link bench-paper bench-evidence lint clean fuzz

setup: $(STAMPS)/apt $(STAMPS)/venv $(STAMPS)/wheelhouse

# QEMU 9+ is needed for the emulated STM32 (b-l475e-iot01a); Debian 12 ships 7.2, so qemu-system-arm
# comes from Debian's bookworm-backports suite (10.0), added here when the machine lacks it.
$(STAMPS)/apt: Makefile
	@mkdir -p $(STAMPS)
	@SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	if ! command -v arm-none-eabi-gcc >/dev/null || ! command -v qemu-system-arm >/dev/null \
	    || ! test -f /usr/lib/arm-none-eabi/newlib/libc.a || ! command -v unshare >/dev/null \
	    || ! command -v ip >/dev/null; then \
	  echo "installing Debian packages: $(APT_PACKAGES)"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends $(APT_PACKAGES) >/dev/null || exit 1; \
	fi; \
	if ! qemu-system-arm -M help 2>/dev/null | grep -q '^b-l475e-iot01a'; then \
	  echo "installing qemu-system-arm 10 from bookworm-backports (the emulated STM32 needs QEMU 9+)"; \
	  grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/ \
	    || printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
	       | $$SUDO tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends -t bookworm-backports qemu-system-arm >/dev/null || exit 1; \
	  qemu-system-arm -M help | grep -q '^b-l475e-iot01a' || { echo "QEMU lacks b-l475e-iot01a"; exit 1; }; \
	fi; \
	if ! command -v riscv64-unknown-elf-gcc >/dev/null \
	    || ! test -f /usr/lib/picolibc/riscv64-unknown-elf/picolibc.specs; then \
	  echo "installing Debian packages: $(APT_RISCV) (the runtime on rv32imc, tests/compiler/test_cores.py)"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends $(APT_RISCV) >/dev/null || exit 1; \
	fi; \
	if ! command -v qemu-system-riscv32 >/dev/null; then \
	  echo "installing qemu-system-misc 10 from bookworm-backports (qemu-system-riscv32; matches qemu-system-arm's)"; \
	  grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/ \
	    || printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
	       | $$SUDO tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends -t bookworm-backports qemu-system-misc >/dev/null || exit 1; \
	fi
	@touch $@

$(STAMPS)/venv: requirements.lock pyproject.toml
	@mkdir -p $(STAMPS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing pinned Python packages into $(VENV) (first time: a few minutes)"
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock 2>&1 | grep -v '^WARNING: Location' || true
	@$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 | grep -v '^WARNING: Location' || true
	@$(PY) -c "import torch, tensorflow, onnx2tf, tflite_micro, microt_deploy" 2>/dev/null \
	  || { echo "the virtual environment is incomplete; see the pip output above"; exit 1; }
	@touch $@

# Wheels of the runtime dependencies (pyproject.toml's `dependencies`, and theirs) at the versions
# requirements.lock pins, for tests/test_packaging.py: it installs the built wheel into a clean
# virtual environment with `pip install --no-index --find-links $(WHEELHOUSE)` (no network at test time).
WHEELHOUSE := .wheelhouse

$(STAMPS)/wheelhouse: $(STAMPS)/venv requirements.lock pyproject.toml
	@mkdir -p $(STAMPS) $(WHEELHOUSE)
	@echo "downloading the runtime dependencies' wheels into $(WHEELHOUSE)"
	@$(PY) -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
	  > $(STAMPS)/wheelhouse-requirements.txt || exit 1; \
	rm -rf $(WHEELHOUSE).tmp; \
	$(PY) -m pip download -q --disable-pip-version-check --only-binary=:all: -d $(WHEELHOUSE).tmp \
	  --find-links $(WHEELHOUSE) -c requirements.lock -r $(STAMPS)/wheelhouse-requirements.txt \
	  > $(STAMPS)/wheelhouse.log 2>&1 \
	  || { grep -v '^WARNING: Location' $(STAMPS)/wheelhouse.log; rm -rf $(WHEELHOUSE).tmp; exit 1; }; \
	rm -rf $(WHEELHOUSE) && mv $(WHEELHOUSE).tmp $(WHEELHOUSE)
	@touch $@

demo: setup
	$(VENV)/bin/microt-deploy demo --project $(PROJECT)

# Tests never let PlatformIO reach the network: every pio call they cause runs in a namespace.
test: setup
	MICROT_PIO_OFFLINE=1 $(PY) -m pytest -q

test-quick: setup
	MICROT_PIO_OFFLINE=1 $(PY) -m pytest -q -m "not slow"

# The compiler bench (the MLPerf Tiny models and the paper's backbones at 176x176, exported once with
# seeded weights); with a built demo project (`make demo`) also the evaluation-speed bench below.
bench: setup
	$(VENV)/bin/microt-deploy bench --backbones all --json bench/results.json $(if $(wildcard $(PROJECT)/export/rest.tflite),--project $(PROJECT))
	$(MAKE) --no-print-directory bench-cores
	$(if $(wildcard $(PROJECT)/firmware/qemu_mps2_an386/firmware.elf),$(MAKE) --no-print-directory bench-link)

# The runtime on every core QEMU emulates (Cortex-M3/M4/M7/M33/M55, rv32imc): kernel path, bit-exact,
# instructions per inference and flash per MLPerf Tiny model (microt_deploy/evaluate/cores.py).
bench-cores: setup
	$(VENV)/bin/microt-deploy bench --cores --json bench/cores.json

# Evaluation speed of a trained, built project on the emulated board: semihosting vs UART, N samples.
EVAL_SAMPLES ?= 1000
bench-link: setup
	$(PY) -m microt_deploy.evaluate.link_bench -p $(PROJECT) --eval-samples $(EVAL_SAMPLES) --profile

# The paper's backbones (mcunet-in3, proxyless-w0.3) at 176x176, cut after block 9, end to end on the
# emulated L4R5ZI-sized board: train, export, compile, stack, build, eval; bench/paper.json and .md
# (microt_deploy/evaluate/paper_bench.py; PAPER_SCHEDULE=quick for the short one). Nothing is downloaded.
PAPER_SCHEDULE ?= full
bench-paper: setup
	$(PY) -m microt_deploy.evaluate.paper_bench --schedule $(PAPER_SCHEDULE) --json bench/paper.json

# The evidence table (issue 11, part 3) on a fresh demo-sized digits project: an unoptimized (labels only),
# a distilled and a jointly trained extractor, part / full / staged accuracy at ratios 0.3 / 0.5 / 0.7 and the
# energy saved vs full-model inference, the paper's figures beside ours; bench/evidence.json and .md
# (microt_deploy/evaluate/evidence.py). EVIDENCE_EPOCHS: teacher, distillation and joint epochs (empty: the
# demo config's 30 each, about twice as long).
EVIDENCE_PROJECT ?= build/evidence-project
EVIDENCE_EPOCHS ?= 15
bench-evidence: setup
	rm -rf $(EVIDENCE_PROJECT) && $(VENV)/bin/microt-deploy init $(EVIDENCE_PROJECT)
	MICROT_PIO_OFFLINE=1 $(VENV)/bin/microt-deploy evidence -p $(EVIDENCE_PROJECT) \
	  $(if $(EVIDENCE_EPOCHS),--epochs $(EVIDENCE_EPOCHS)) --json bench/evidence.json --md bench/evidence.md

lint: setup
	$(VENV)/bin/ruff check microt_deploy tests

# Bounded coverage-guided fuzzing (fuzz/run.py): the frame parser and the command handlers with
# libFuzzer (Debian's clang; -fsanitize=fuzzer needs its compiler-rt package), the .tflite reader
# with atheris. FUZZ_SECONDS per target; prints executions, cov/ft and crashes (exit 1 on a crash).
FUZZ_SECONDS ?= 60
ATHERIS := atheris==3.0.0

$(STAMPS)/fuzz: $(STAMPS)/venv
	@mkdir -p $(STAMPS)
	@SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	probe=$$(mktemp -d); \
	printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' > $$probe/p.c; \
	if ! clang -fsanitize=fuzzer,address,undefined $$probe/p.c -o $$probe/p 2>/dev/null; then \
	  echo "installing Debian packages: clang and its compiler-rt (libFuzzer, ASan, UBSan)"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends clang >/dev/null || exit 1; \
	  major=$$(clang -dumpversion | cut -d. -f1); \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    libclang-rt-$$major-dev >/dev/null || exit 1; \
	  clang -fsanitize=fuzzer,address,undefined $$probe/p.c -o $$probe/p \
	    || { echo "clang cannot build libFuzzer targets"; rm -rf $$probe; exit 1; }; \
	fi; \
	rm -rf $$probe
	@$(PY) -c "import atheris" 2>/dev/null || $(PY) -m pip install -q --disable-pip-version-check $(ATHERIS)
	@touch $@

fuzz: $(STAMPS)/fuzz
	$(PY) fuzz/run.py --seconds $(FUZZ_SECONDS)

clean:
	rm -rf $(STAMPS) $(PROJECT) build
