"""Property-based test of the experiment ledger (issue 12): random sequences of operations
(propose, ingest, status changes, including refused ones) keep its invariants. No MCMC."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bayesmix import errors
from bayesmix.data.table import RunTable
from bayesmix.loop.ledger import STATUSES, TRANSITIONS, Ledger

TRAIN = ["web", "code", "books"]
EVAL = ["web", "code"]

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("propose"), st.integers(1, 3), st.integers(0, 2**16)),
        st.tuples(st.just("ingest"), st.integers(0, 20), st.sampled_from([2.5, 3.0, 1e308, -1.0])),
        st.tuples(st.just("status"), st.integers(0, 20), st.sampled_from(STATUSES)),
        st.tuples(st.just("status2"), st.integers(0, 20), st.sampled_from(STATUSES)),
    ),
    min_size=1,
    max_size=12,
)


def check_invariants(led: Ledger) -> None:
    runs = led.runs()
    assert runs["run"].is_unique
    assert set(runs["status"]) <= set(STATUSES)
    rounds = sorted(set(runs.loc[~runs["external"], "round"]))
    assert rounds == list(range(len(rounds)))  # rounds contiguous from 0
    mix = runs[[f"mix.{d}" for d in TRAIN]].to_numpy()
    np.testing.assert_allclose(mix.sum(axis=1), 1.0, atol=1e-9)
    assert ((runs["checkpoints"] > 0) == (runs["status"] == "completed")).all()
    if (runs["status"] == "completed").any():
        losses = led.run_table().losses
        assert np.isfinite(losses.to_numpy()).all() and (losses.to_numpy() > 0).all()
        assert (losses.to_numpy() <= 100).all()
    handoffs = led.handoffs()
    assert set(handoffs) <= set(runs["round"])  # every record names a round
    for rnd in handoffs:
        assert not led.handoff_frame(rnd).empty


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_random_operation_sequences_keep_the_ledger_invariants(ops):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "exp.db"
        with Ledger.create(path, TRAIN, EVAL) as led:
            for op, a, b in ops:
                runs = led.runs()
                ids = runs["run"].tolist()
                before = runs[["run", "status"]].to_numpy().tolist()
                try:
                    if op == "propose":
                        mix = np.random.default_rng(b).dirichlet(np.ones(3), size=a)
                        new = led.add_proposals(
                            mix,
                            "random",
                            None,
                            min_distance=0.0,
                            handoff=lambda r: Path(d) / f"r{r}.csv",
                        )
                        assert len(new) == a and not set(new) & set(ids)
                    elif op == "ingest" and ids:
                        row = runs.iloc[a % len(ids)]
                        frame = pd.DataFrame(
                            {
                                "run": [row["run"]],
                                **{f"mix.{t}": [row[f"mix.{t}"]] for t in TRAIN},
                                "loss.web": [b],
                                "loss.code": [2.0],
                            }
                        )
                        table = RunTable.from_frame(frame, max_loss=1e308)
                        led.record_results(table)
                        assert b <= 100 and row["status"] in ("proposed", "running", "completed")
                    elif op in ("status", "status2") and ids:
                        run = ids[a % len(ids)]
                        changes = {run: b}
                        if op == "status2":  # one good and one unknown run
                            changes["missing"] = "failed"
                        led.set_statuses(changes)
                        old = dict(before)[run]
                        assert op == "status" and (b == old or b in TRANSITIONS[old])
                        assert b != "completed" or old == "completed"
                except errors.BayesmixError:
                    if op != "propose":  # a refused change changed nothing
                        after = led.runs()[["run", "status"]].to_numpy().tolist()
                        assert after == before
                check_invariants(led)
