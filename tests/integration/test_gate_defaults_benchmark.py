"""benchmarks/gate_defaults.py without MCMC: what it plans to fit, the summary line the issue
asks for, and a run where every data set is absent (skipped with a message, nothing fitted)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import gate_defaults as gd  # noqa: E402


def test_the_full_plan_covers_every_law_data_set_and_seed():
    todo = gd.plan(None, quick=False, seeds=None)
    assert len(todo) == len(set(todo))
    laws = {law for _, law, _ in todo}
    assert laws == {*gd.SPECS, "pipeline"}  # every shipped law, and the pipeline
    # RegMix 512 with logshare at 5 seeds, everything else at 3
    assert [s for d, law, s in todo if (d, law) == ("regmix512", "m4log")] == [1, 2, 3, 4, 5]
    assert [s for d, law, s in todo if (d, law) == ("regmix64", "additive")] == [1, 2, 3]
    assert {d for d, law, _ in todo if law == "m4"} == {
        "regmix512",
        "regmix64",
        "mix5",
        "mix3",
        "olmix24",
    }
    assert {(d, law) for d, law, _ in todo if d in ("swarm64", "pipeline")} == {
        ("swarm64", "m4log"),
        ("pipeline", "pipeline"),
    }


def test_quick_and_only_select_parts():
    quick = gd.plan(None, quick=True, seeds=None)
    assert {s for *_, s in quick} == {1} and {d for d, *_ in quick} == set(gd.QUICK)
    assert gd.plan(["m4log@mix3", "pipeline"], quick=False, seeds=(2,)) == [
        ("mix3", "m4log", 2),
        ("pipeline", "pipeline", 2),
    ]
    assert {law for _, law, _ in gd.plan(["additive"], quick=False, seeds=(1,))} == {"additive"}
    with pytest.raises(SystemExit, match="unknown nope"):
        gd.plan(["nope"], quick=False, seeds=None)


def test_summary_line_has_the_issues_keys_and_worst_figures():
    r = gd.Result
    results = [
        r("m4log", "regmix512", 1, 50.0, True, 1.004, 700.0, 1),
        r("m4log", "regmix512", 2, 75.5, False, 1.012, 380.0, 3, "R-hat"),
        r("additive", "mix3", 1, 9.0, True, 1.002, 1500.0, 2),
        r("m4log", "swarm64", 1, 1900.0, False, 3.3, 5.0, 2),
        r("pipeline", "pipeline", 1, 200.0, False, 1.02, 90.0, 12, "", 9, 7),
        r("m4", "mix5", 1, math.nan, False, math.nan, math.nan, 0, "RuntimeError()"),
    ]
    line = gd.summary_line(results)
    assert line == (
        "gate_defaults fits=6 passed=2 worst_rhat=3.300 min_ess=5 regmix512_s=75.5 "
        "regmix512_seeds_passed=1/2 swarm64_s=1900.0 swarm64_gate=0/1 pipeline_s=200.0 "
        "pipeline_gates=7/9"
    )
    assert gd.summary_line([]).startswith("gate_defaults fits=0 passed=0 worst_rhat=nan")


def test_absent_data_sets_are_skipped_with_a_message(tmp_path, capsys):
    gd.main(["--data", str(tmp_path), "--only", "mix3,olmix24,pipeline", "--quiet"])
    out = capsys.readouterr().out.splitlines()
    skipped = [line for line in out if line.startswith("skipped ")]
    assert [s.split(":")[0] for s in skipped] == [
        "skipped mix3",
        "skipped olmix24",
        "skipped pipeline",
    ]
    assert all("not found (pass --data)" in s for s in skipped)
    assert out[-1].startswith("gate_defaults fits=0 passed=0 ")
