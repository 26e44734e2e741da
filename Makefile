# Two commands do everything: `make demo` (main job on built-in data) and `make test`.
# Each creates .venv with a Python >= 3.12 on first use and installs the package into it.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo real-loop test test-fast lint lint-quick venv benchmarks clean

$(STAMP): pyproject.toml
	@test -x $(PY) || { interp=$$(tools/find-python) && echo "creating $(VENV) with $$interp" && $$interp -m venv $(VENV); }
	$(PY) -m pip install -qq --upgrade pip
	$(PY) -m pip install -qq -e '.[dev,ray,slurm,tracking]'
	@# headless Chromium for tests/reporting/test_report_browser.py: Debian's package when none is found
	@# (root with apt-get only; failures ignored: the test then skips and says why)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	    } >/dev/null 2>&1; } || true
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

# the loop with real (tiny) training: bayesmix run launches examples/tiny_trainer.py per run
real-loop: $(STAMP)
	$(PY) examples/real_loop.py

# lint: ruff (formatting, style, bugs) on all Python code, the layer contract (import-linter:
# layers of ARCHITECTURE.md, no import cycles; contracts in pyproject.toml), no module importing
# another's private names (tools/check_imports.py) and mypy (types) on the package;
# `$(VENV)/bin/ruff format bayesmix tests examples benchmarks` fixes what the format check finds.
# `make test` runs the quick checks first and mypy (about 30 s on one core) beside the tests;
# either failing fails it. The tests: two workers (pytest-xdist), one test file each at a time
# so a file's fitted fixtures are made once; they share one compile cache, so each model
# structure compiles once
test: $(STAMP) lint-quick
	@$(VENV)/bin/mypy > $(VENV)/mypy.log 2>&1 & types=$$!; \
	$(PY) -m pytest -q -n 2 --dist loadfile; tests=$$?; \
	wait $$types; typed=$$?; cat $(VENV)/mypy.log; \
	test $$tests -eq 0 && test $$typed -eq 0

lint: lint-quick
	$(VENV)/bin/mypy

lint-quick: $(STAMP)
	$(VENV)/bin/ruff format --check bayesmix tests examples benchmarks
	$(VENV)/bin/ruff check bayesmix tests examples benchmarks
	$(VENV)/bin/lint-imports
	$(PY) tools/check_imports.py

# everything but the tests marked slow (MCMC fits); `make test` still runs them all
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# every script in benchmarks/, each printing its figures and a last key=value line
# (docs/performance.md has the current figures); many hours on 2 cores, the last ones longest
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -qq -e '.[dev,ray,bench]'
	@touch $(BENCH_STAMP)

benchmarks: $(BENCH_STAMP)
	$(PY) benchmarks/fit_speed.py
	$(PY) benchmarks/fresh_compile.py
	$(PY) benchmarks/scale_speed.py
	$(PY) benchmarks/regmix_accuracy.py --train 512
	$(PY) benchmarks/optimize_accuracy.py
	$(PY) benchmarks/repetition.py
	$(PY) benchmarks/phases.py
	$(PY) benchmarks/guarantees.py
	$(PY) benchmarks/implicit_aggregation.py
	$(PY) benchmarks/continual.py
	$(PY) benchmarks/nested_pipeline.py
	$(PY) benchmarks/scale_transfer.py --method joint --only-scale
	$(PY) benchmarks/law_comparison.py
	$(PY) benchmarks/domain_change.py
	$(PY) benchmarks/downstream.py
	$(PY) benchmarks/multifidelity.py
	$(PY) benchmarks/sim_replay.py
	$(PY) benchmarks/pool_replay.py
	$(PY) benchmarks/gate_defaults.py
	$(PY) benchmarks/small_data_gate.py

clean:
	rm -rf $(VENV) .pytest_cache
