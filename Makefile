# Two commands set everything up on a machine with only Python and make:
#   make run   ingest a sample folder (SAMPLE=..., empty to skip; the shared GIFs' tags only with the
#              default SAMPLE, else TAGS=...) into the SQLite store of DATA_DIR (default $GIFLENS_DATA_DIR,
#              else giflens-data), then start the editors' app on http://localhost:$(PORT)
#   make test  run the whole test suite (slow, postgres and browser tests included)
#   make bench run the benchmarks that take minutes, printing their figures (never pass / fail)
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
SHARED := ../shared/data
DEFAULT_SAMPLE := $(SHARED)/gifs
SAMPLE ?= $(DEFAULT_SAMPLE)
# The shared GIFs' tags only go with the shared GIFs: another SAMPLE would get one "not ingested" note per row.
# The shared GIFs however spelt (an absolute path, ./../, a link to them): their real paths are compared;
# realpath is empty for a path that does not exist, so only the text is compared then.
SAMPLE_REAL := $(realpath $(SAMPLE))
ifeq ($(patsubst %/,%,$(SAMPLE)),$(DEFAULT_SAMPLE))
TAGS ?= $(SHARED)/gifs.csv
else ifneq ($(SAMPLE_REAL),)
ifeq ($(SAMPLE_REAL),$(realpath $(DEFAULT_SAMPLE)))
TAGS ?= $(SHARED)/gifs.csv
endif
endif
TAGS ?=
CLASSES ?= $(SHARED)/giphy-celebrities.csv
PORT ?= 8501
DATA_DIR ?= $(or $(GIFLENS_DATA_DIR),giflens-data)
PYTEST_ARGS ?=
TEST_WORKERS ?= 2
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba-cache

# CLASSES or TAGS named on the command line or in the environment (not the Makefile's defaults, the shared
# data some machines lack, which are skipped silently): a missing one is a typo, refused before anything runs.
NAMED_FILES := $(foreach v,CLASSES TAGS,$(if $(filter-out file default,$(origin $(v))),$(if $(strip $($(v))),$(v))))

.PHONY: uv sync run run-args test bench postgres chromium

# uv from PATH, else `python3 -m uv`, else pip installs it; a Debian/Ubuntu system Python refuses that
# (PEP 668, externally managed), so then it goes to the user site, where `python3 -m uv` finds it.
uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv \
		|| python3 -m pip install --quiet --user --break-system-packages uv

sync: uv
	$(UV) sync --frozen

# Refused before anything runs: an empty DATA_DIR (`make run DATA_DIR=`) would be --data-dir "", and a
# mistyped CLASSES= or TAGS= would be skipped without a word.
run-args:
	@if [ -z "$(strip $(DATA_DIR))" ]; then echo 'error: DATA_DIR is empty (omit it for $$GIFLENS_DATA_DIR or giflens-data)' >&2; exit 2; fi
	@$(foreach v,$(NAMED_FILES),if [ ! -f "$($(v))" ]; then echo 'error: $(v)=$($(v)): no such file (empty to skip it)' >&2; exit 2; fi;) true

run: run-args sync
	@if [ -n "$(SAMPLE)" ]; then $(UV) run giflens ingest "$(SAMPLE)" --data-dir "$(DATA_DIR)"; fi
	@if [ -n "$(CLASSES)" ] && [ -f "$(CLASSES)" ]; then $(UV) run giflens import classes "$(CLASSES)" --data-dir "$(DATA_DIR)"; fi
	@if [ -n "$(TAGS)" ] && [ -f "$(TAGS)" ]; then $(UV) run giflens import tags "$(TAGS)" --data-dir "$(DATA_DIR)"; fi
	$(UV) run giflens app --data-dir "$(DATA_DIR)" --port $(PORT)

postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start || true

# Browser tests drive Debian's Chromium (never `playwright install`: it downloads).
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) || echo "chromium could not be installed: browser tests will fail"

# Both cores: the suite is mostly model inference, and one worker per core halves the wall time.
test: sync postgres chromium
	$(UV) run pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

# The benchmarks that run in minutes on the shared data (README, Benchmarks); each prints its figures and ends
# with one key=value line. The LFW ones share embeddings computed once (about a minute) into /tmp.
bench: sync postgres
	$(UV) run python bench/store.py
	$(UV) run python bench/history.py
	$(UV) run python bench/dupes.py
	$(UV) run python bench/knn.py --images $(SHARED)/lfw
	$(UV) run python bench/recognition.py --images $(SHARED)/lfw
	$(UV) run python bench/tagging.py --gifs $(SHARED)/gifs --tags $(SHARED)/gifs.csv
