# Two entry points, each of which sets itself up (a pinned venv in .venv) first:
#   make run    - the embedded default end to end (Snakemake, 2 cores, offline), then the report, and the README's
#                 results section (the claims table) from this run
#   make report - report.html: every table and figure of the finished run with its caption (snakemake --report)
#   make test   - the test suite (unit tests + a smoke run of the whole DAG)
# and one setup step for Slurm clusters:
#   make slurm-profile - link profiles/slurm where Snakemake finds profiles by name: `snakemake --profile slurm`
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= 2
REPORT ?= report.html

.PHONY: setup run report smoke test lint bench clean slurm-profile
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0   # first and pinned: any other spec pulls a CUDA build
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

run: setup
	$(PY) -m dlm.cli unlock-stale   # a killed earlier run left its locks: the rerun completes it
	$(VENV)/bin/snakemake --profile profiles/local --cores $(CORES)
	$(MAKE) report
	$(PY) -m dlm.cli readme-results   # README.md's results block = results/tables/claims.md of this run

report: setup
	$(VENV)/bin/snakemake --profile profiles/local --report $(REPORT)

smoke: setup
	$(PY) -m dlm.cli unlock-stale
	$(VENV)/bin/snakemake --profile profiles/smoke --configfile config/smoke.yaml

test: setup
	$(PY) -m pytest -q --durations=30   # the 30 slowest tests at the end: where CI time goes

lint: setup
	$(VENV)/bin/snakemake --lint

# Snakemake looks for `--profile NAME` in the working directory, $XDG_CONFIG_HOME/snakemake (default
# ~/.config/snakemake) and /etc/xdg/snakemake; a link (not a copy) keeps the profile edited here in use
PROFILE_DIR ?= $(or $(XDG_CONFIG_HOME),$(HOME)/.config)/snakemake
slurm-profile:
	@mkdir -p "$(PROFILE_DIR)"
	@if [ -e "$(PROFILE_DIR)/slurm" ] && [ ! -L "$(PROFILE_DIR)/slurm" ]; then \
	  echo "$(PROFILE_DIR)/slurm exists and is not a link: move it away, then run make slurm-profile again" >&2; \
	  exit 1; fi
	ln -sfn "$(CURDIR)/profiles/slurm" "$(PROFILE_DIR)/slurm"
	@echo "snakemake --profile slurm now uses $(CURDIR)/profiles/slurm"

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf results resources logs benchmarks .snakemake $(REPORT)
