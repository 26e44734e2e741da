"""Writes ``ledger_schema1.db`` (the fixture of test_ledger_domains.py) with bayesmix at commit
9a2ac46, the last ledger schema 1: ``git worktree add /tmp/old 9a2ac46`` and
``PYTHONPATH=/tmp/old python tests/loop/make_ledger_schema1.py tests/loop/ledger_schema1.db``
(the path must not exist). Not run by the suite: the file is committed."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmix.data.constraints import Constraints
from bayesmix.data.table import RunTable
from bayesmix.loop.ledger import Ledger

TRAIN = ["web", "code", "books"]
EVAL = ["web", "code"]


def table(runs, mixes, losses):
    f = pd.DataFrame({"run": runs})
    for j, d in enumerate(TRAIN):
        f[f"mix.{d}"] = np.asarray(mixes, float)[:, j]
    for j, d in enumerate(EVAL):
        f[f"loss.{d}"] = np.asarray(losses, float)[:, j]
    return RunTable.from_frame(f, source="results.csv")


out = Path(sys.argv[1])
cons = Constraints.build(TRAIN, max_share={"code": 0.6})
led = Ledger.create(out, TRAIN, EVAL, cons)
led.import_runs(table(["p1", "p2"], [[0.6, 0.2, 0.2], [0.2, 0.4, 0.4]], [[3.0, 2.1], [3.2, 1.9]]))
mix = [[0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.4, 0.1, 0.5], [0.3, 0.3, 0.4], [0.2, 0.4, 0.4]]
ids = led.add_proposals(
    np.array(mix),
    "thompson",
    fit={"results_digest": "sha256:0"},
    handoff=out.with_name("exp-round1.csv"),
)
assert ids == ["r0001", "r0002", "r0003", "r0004", "r0005"], ids
led.mark_handoff_written(1)
led.record_results(table(ids[:2], mix[:2], [[3.0, 2.0], [3.3, 1.8]]))
led.claim("r0003", {"host": "h", "pid": 1})
led.release("r0003", "failed", "exit 1: CUDA out of memory")
led.set_status("r0004", "abandoned")
led.record_fit({"posterior": "exp.posterior-round1.nc", "results_digest": "sha256:1"})
led.close()
print("ok")
