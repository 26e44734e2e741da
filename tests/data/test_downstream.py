"""Downstream tasks as targets: the swarm loader (selection, direction, errors) on small frames
and on Olmix's real swarm when ../shared/data/olmix is present."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayesmix import errors
from bayesmix.data.downstream import in_family, load_tasks, select_names
from tests.conftest import SHARED_DATA

TASKS = ["mmlu_anatomy:rc::olmes", "mmlu_virology:rc::olmes", "arc_easy:rc::olmes", "acc"]


def _frames(n=6):
    rng = np.random.default_rng(0)
    shares = rng.dirichlet(np.ones(3), size=n)
    ids = {"run": [f"r{i}" for i in range(n)], "name": [f"n{i}" for i in range(n)]}
    mix = pd.DataFrame(
        {
            **ids,
            "index": np.arange(n)[::-1],
            "web": shares[:, 0],
            "code": shares[:, 1],
            "math": shares[:, 2],
        }
    )
    met = pd.DataFrame({**ids, "index": np.arange(n)[::-1]})
    for t in TASKS[:3]:
        met[t] = 1.0 + rng.random(n)
    met["acc"] = 0.2 + 0.5 * rng.random(n)
    return mix, met.sample(frac=1.0, random_state=1)  # rows in another order: joined on run


def test_tasks_are_loss_columns_joined_on_run_in_mixture_order():
    mix, met = _frames()
    tasks = load_tasks(mix, met)
    assert tasks.names == tuple(TASKS)
    assert tasks.table.train_domains == ("web", "code", "math")
    got = tasks.table.losses.loc["r3", "mmlu_virology:rc::olmes"]
    assert got == pytest.approx(met.set_index("run").loc["r3", "mmlu_virology:rc::olmes"])
    # index runs 5..0 over r0..r5: sorted by index the last run comes first
    assert tasks.runs_by_index()[0] == "r5"


@pytest.mark.parametrize(
    ("select", "expected"),
    [
        ("mmlu", TASKS[:2]),  # a family head
        (["mmlu_v*", "acc"], [TASKS[1], "acc"]),  # a glob and a name, in file order
        ("arc_easy:rc::olmes", [TASKS[2]]),
    ],
)
def test_selection_by_name_glob_or_family(select, expected):
    assert select_names(TASKS, select) == expected


def test_a_selection_that_matches_nothing_is_an_error():
    with pytest.raises(errors.DomainNameError, match="'mmlux' matches no task"):
        select_names(TASKS, ["mmlu", "mmlux"])


def test_family_heads_stop_at_underscores():
    assert in_family("mmlu_anatomy:rc::olmes", "mmlu")
    assert not in_family("mmlux_anatomy", "mmlu")
    assert not in_family("mt_mbpp_v2fix:go", "mbpp")


def test_higher_is_better_enters_as_ceiling_minus_value_and_maps_back():
    mix, met = _frames()
    tasks = load_tasks(mix, met, higher_is_better=["acc"])
    acc = met.set_index("run").loc["r2", "acc"]
    entered = tasks.table.losses.loc["r2", "acc"]
    assert entered == pytest.approx(1.0 - acc)  # accuracies in [0, 1]: ceiling 1
    assert tasks.higher_is_better == {"acc": 1.0}
    assert tasks.to_metric("acc", entered) == pytest.approx(acc)
    assert tasks.to_metric("arc_easy:rc::olmes", 1.5) == 1.5  # lower-is-better: unchanged


def test_percent_accuracies_use_ceiling_100_and_others_are_refused():
    mix, met = _frames()
    met["acc"] *= 100
    assert load_tasks(mix, met, higher_is_better=["acc"]).higher_is_better == {"acc": 100.0}
    met["acc"] = -1.0
    with pytest.raises(errors.FormatError, match="column 'acc'.*in \\[0, 1\\] or \\[0, 100\\]"):
        load_tasks(mix, met, higher_is_better=["acc"])


def test_a_run_missing_from_one_file_is_named():
    mix, met = _frames()
    with pytest.raises(errors.FormatError, match="run 'r4': run has no row in the other file"):
        load_tasks(mix, met[met["run"] != "r4"])


def test_olmix_swarm_loads_with_every_task():
    if not (SHARED_DATA / "olmix").is_dir():
        pytest.skip("real data absent: ../shared/data/olmix")
    d = SHARED_DATA / "olmix"
    tasks = load_tasks(d / "dclm_ratios.csv", d / "dclm_metrics.csv")
    assert tasks.table.n_runs == 127
    assert len(tasks.table.train_domains) == 24
    assert len(tasks.names) >= 100 and "mt_mbpp_v2fix:go" in tasks.names
    assert len(select_names(tasks.names, "mmlu")) == 57
