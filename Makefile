# The two commands of the README. Each does its own set-up (scripts/setup.sh) on a fresh machine.
#   make reproduce   the run queue (python -m diffnb.run.pipeline): train, score, studies, then every
#                    notebook executed in order -> figures/, results/ (quick: figures/quick/, ...),
#                    then python -m diffnb.run.compare: how far they are from the committed ones
#   make test        ruff (lint), lint-imports (pyproject.toml's layers: imports only go down),
#                    unit tests (two workers), then nbval over the notebooks in order,
#                    then the browser test (it reuses the models the notebooks trained)
# DIFFNB_PROFILE=cpu|quick|full|full-b32|tiny picks the loop sizes (runtime.PROFILES; default:
# cpu once weights/cpu/ keeps all its models, quick before; docs/profiles.md).
# WORKERS=2 trains two models side by side, one thread each (a 2-core CPU).
# AGAIN=1 runs every stage again though results/[<profile>/]pipeline.json records it as done
# (a fresh clone holds the committed run's record): models and scores that still match are reused.
PY := .venv/bin/python

.PHONY: reproduce test setup clean benchmarks
reproduce:
	bash scripts/setup.sh
	$(PY) -m diffnb.run.pipeline $(DIFFNB_PROFILE) $(if $(AGAIN),--again) \
		$(if $(WORKERS),--workers $(WORKERS))
	$(PY) -m diffnb.run.compare $(DIFFNB_PROFILE)

test:
	bash scripts/setup.sh --test
	$(PY) -m ruff check diffnb tests benchmarks scripts
	.venv/bin/lint-imports
	$(PY) -m pytest -p no:cacheprovider -n 2 --dist loadfile tests -m "not browser" --durations=15 -rs
	$(PY) -m pytest -p no:cacheprovider notebooks tests/test_browser.py --nbval-lax \
		--nbval-current-env --durations=15 -rs

setup:
	bash scripts/setup.sh --test

benchmarks:
	bash scripts/setup.sh
	$(PY) benchmarks/train_speed.py
	$(PY) benchmarks/fid_speed.py

clean:
	rm -rf checkpoints .cache/fid/stats artifacts
