"""docs/parameters.md names every variable of every shipped model (what the gate can print), and
its table of the ``posterior`` group names exactly what each law's saved posterior holds there."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

import bayesmix as bm
from bayesmix.laws import get_law
from bayesmix.model.model import build_model, prepare_data, select_for_fit
from bayesmix.model.spec import available_models, load_spec
from bayesmix.posterior.groups import kept_names
from bayesmix.scaling.pipeline import build_curve_model, step_data

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "parameters.md").read_text()
DOCUMENTED = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)(?:\[[^`]*\])?`", PAGE))
NAME = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*(?:\+absent|\+repeat|\+phases)?)`")


def posterior_group_table() -> dict[str, set[str]]:
    """Law -> the names the page's table of the ``posterior`` group gives it (every column)."""
    section = PAGE[PAGE.index("## What a saved posterior") :]
    section = section[: section.index("\n## ", 1)]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    out = {}
    for row in rows:
        cells = row.strip("|").split("|")
        out[NAME.findall(cells[0])[0]] = {n for cell in cells[1:] for n in NAME.findall(cell)}
    return out


def _names(model) -> set[str]:
    return {v.name for v in [*model.free_RVs, *model.deterministics]}


@pytest.mark.parametrize("name", available_models())
def test_every_variable_of_a_shipped_model_is_documented(name):
    spec = load_spec(name)
    if spec.law == "scaling":
        sys.path.insert(0, str(ROOT / "tests" / "scaling"))
        from test_scaling import proxy_runs

        runs = proxy_runs()
    else:
        runs, _ = bm.simulate(["web", "code", "books"], n_runs=12, random_seed=0)
    if "tokens" in get_law(spec.law).budget_inputs:  # the repetition component's inputs
        tidy = runs.to_tidy().assign(tokens=1e9)
        runs = bm.RunTable.from_frame(
            tidy.assign(**{f"unique.{d}": 1e10 for d in runs.train_domains})
        )
    table = select_for_fit(runs, law=spec.law)
    model = build_model(
        spec, table.train_domains, table.eval_domains, prepare_data(table, spec.law)
    )
    missing = _names(model) - DOCUMENTED
    assert not missing, f"{name}: add {sorted(missing)} to docs/parameters.md"
    # what the posterior group stores (Posterior.from_fit keeps these of the model's variables)
    stored = {n for n in kept_names(get_law(spec.law)) if n in _names(model)}
    assert posterior_group_table()[spec.law] == stored, f"{name}: the posterior group table"


def test_the_posterior_group_table_covers_every_shipped_law():
    shipped = {load_spec(name).law for name in available_models()}
    assert set(posterior_group_table()) == shipped


def test_pipeline_stage_variables_are_documented():
    from bayesmix.data.schedules import Schedule
    from bayesmix.model.simulation import simulate

    runs, _ = simulate(
        ["web", "code"], n_runs=4, random_seed=0, sizes=[2e7, 5e7], steps=[1000, 2000, 4000]
    )
    tidy = runs.to_tidy().assign(schedule="cosine", total_steps=4000.0)
    annealed = bm.RunTable.from_frame(tidy)
    assert Schedule("cosine", total_steps=4000).decays
    for table in (runs, annealed):
        missing = _names(build_curve_model(step_data(table))) - DOCUMENTED
        assert not missing, sorted(missing)
    assert np.all(np.isfinite(step_data(annealed).anneal))
