# The two commands of the README. Each does its own set-up (scripts/setup.sh) on a fresh machine.
#   make reproduce   the run queue (python -m diffnb.pipeline): train, score, studies, then every
#                    notebook executed in order -> figures/, results/ (quick: figures/quick/, ...)
#   make test        unit tests + nbval over the notebooks + the browser test
# DIFFNB_PROFILE=quick|full picks the loop sizes (default: full with CUDA, quick without).
PY := .venv/bin/python

.PHONY: reproduce test setup clean benchmarks
reproduce:
	bash scripts/setup.sh
	$(PY) -m diffnb.pipeline $(DIFFNB_PROFILE)

test:
	bash scripts/setup.sh --test
	$(PY) -m ruff check diffnb tests benchmarks scripts
	$(PY) -m pytest -p no:cacheprovider tests notebooks --nbval-lax --nbval-current-env \
		--durations=15 -rs

setup:
	bash scripts/setup.sh --test

benchmarks:
	bash scripts/setup.sh
	$(PY) benchmarks/train_speed.py
	$(PY) benchmarks/fid_speed.py

clean:
	rm -rf checkpoints .cache/fid/stats artifacts
