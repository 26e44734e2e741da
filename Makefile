# Two commands do everything: `make demo` (main job on built-in data) and `make test`.
# Each creates .venv with a Python >= 3.12 on first use and installs the package into it.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test venv benchmarks clean

$(STAMP): pyproject.toml
	@test -x $(PY) || { interp=$$(tools/find-python) && echo "creating $(VENV) with $$interp" && $$interp -m venv $(VENV); }
	$(PY) -m pip install -qq --upgrade pip
	$(PY) -m pip install -qq -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(PY) -m pytest -q

benchmarks: $(STAMP)
	$(PY) benchmarks/fit_speed.py
	$(PY) benchmarks/regmix_accuracy.py --train 512
	$(PY) benchmarks/law_comparison.py
	$(PY) benchmarks/scale_transfer.py

clean:
	rm -rf $(VENV) .pytest_cache
