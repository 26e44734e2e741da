"""bayesmix: choose a language model's pre-training data mixture as a Bayesian decision.

Pipeline: run table (``bayesmix.data.table``) -> model specification (``bayesmix.model.spec``) ->
MCMC fit (``bayesmix.inference.fitting``) -> posterior (``bayesmix.posterior.posterior``) -> decide
(``optimize``, ``acquire``) -> ledger -> new runs.

The public API, one name per step (imported on first use, so ``import bayesmix`` stays light):

===================  ======================================================================
``load``             read run results (tidy CSV/Parquet, RegMix, Ye et al. logs) into a RunTable
``simulate``         draw a run table from a known M4 law (returns the table and the Truth)
``fit``              fit a mixing law with MCMC -> ``Posterior``
``Posterior``        predict, intervals, save; ``Posterior.load(path)`` reads a saved one
``Constraints``      the feasible mixtures (share limits, token availability)
``DecisionProblem``  the decision to make: constraints, weights or target, objective, guarantees
``decide``           the decision -> ``DecisionReport`` (recommendation, intervals, spread)
``Experiment``       the active-learning loop over a ledger (create, propose, ingest, ...)
``propose``          one round of proposals for a ledger (``Experiment(...).propose``)
``report``           the self-contained HTML report of a posterior [+ decision, ledger]
``backtest``         refit with the largest size / latest steps held out: how well scaling up works
``evaluate``         score a posterior on held-out runs: MAE, bias, Spearman, interval coverage
===================  ======================================================================

``report`` is also reachable as ``write_report``, ``Posterior.report()`` and
``DecisionReport.to_html()``; ``decide`` lives in ``bayesmix.decisions.decision``,
``DecisionProblem`` in ``bayesmix.decisions.problem`` and ``DecisionReport`` in
``bayesmix.decisions.decision_report``.

Argument names follow PyMC and ArviZ: ``random_seed``, ``progressbar``, ``ci_prob`` (interval
mass) and ``ci_kind`` ("eti" equal-tailed, the default, or "hdi"); the former ``seed``,
``progress`` and ``prob`` still work for one release with a ``FutureWarning``.

Examples
--------
>>> import bayesmix as bm
>>> runs, truth = bm.simulate(["web", "code", "books"], n_runs=12, random_seed=0)
>>> runs.n_runs, runs.train_domains
(12, ('web', 'code', 'books'))
>>> cons = bm.Constraints.build(["web", "code", "books"], max_share={"code": 0.3})
>>> bool(cons.contains([0.5, 0.2, 0.3])), bool(cons.contains([0.2, 0.5, 0.3]))
(True, False)

Fitting runs MCMC (about a minute the first time a model structure is compiled):

>>> post = bm.fit(runs, draws=500, tune=500, chains=2, random_seed=1)  # doctest: +SKIP
>>> rec = bm.decide(post, constraints=cons)                            # doctest: +SKIP
>>> print(rec.to_text())                                               # doctest: +SKIP
>>> bm.report("report.html", post, decision=rec)                       # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

from bayesmix._compat import PROGRESS, SEED, renamed_kwargs
from bayesmix.data.table import RunTable
from bayesmix.errors import BayesmixError

#: Public names loaded on first access: name -> (module, attribute).
_LAZY = {
    "load": ("bayesmix.data.loaders", "load"),
    "simulate": ("bayesmix.model.simulation", "simulate"),
    "fit": ("bayesmix.inference.fitting", "fit"),
    "Posterior": ("bayesmix.posterior.posterior", "Posterior"),
    "Constraints": ("bayesmix.data.constraints", "Constraints"),
    "decide": ("bayesmix.decisions.decision", "decide"),
    "DecisionProblem": ("bayesmix.decisions.problem", "DecisionProblem"),
    "DecisionReport": ("bayesmix.decisions.decision_report", "DecisionReport"),
    "Experiment": ("bayesmix.loop.experiment", "Experiment"),
    "write_report": ("bayesmix.reporting.html_report", "write_report"),
    "report": ("bayesmix.reporting.html_report", "write_report"),
    "backtest": ("bayesmix.scaling.backtesting", "backtest"),
    "evaluate": ("bayesmix.posterior.evaluation", "evaluate"),
}

__all__ = [
    "BayesmixError",
    "Constraints",
    "DecisionProblem",
    "DecisionReport",
    "Experiment",
    "Posterior",
    "RunTable",
    "__version__",
    "backtest",
    "decide",
    "evaluate",
    "fit",
    "load",
    "propose",
    "report",
    "simulate",
    "write_report",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time these load lazily
    from bayesmix.data.constraints import Constraints
    from bayesmix.data.loaders import load
    from bayesmix.decisions.decision import decide
    from bayesmix.decisions.decision_report import DecisionReport
    from bayesmix.decisions.problem import DecisionProblem
    from bayesmix.inference.fitting import fit
    from bayesmix.loop.experiment import Experiment
    from bayesmix.model.simulation import simulate
    from bayesmix.posterior.evaluation import evaluate
    from bayesmix.posterior.posterior import Posterior
    from bayesmix.reporting.html_report import write_report
    from bayesmix.reporting.html_report import write_report as report
    from bayesmix.scaling.backtesting import backtest


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'bayesmix' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


@renamed_kwargs(**SEED, **PROGRESS)
def propose(
    ledger,
    n: int = 8,
    strategy: str = "thompson",
    *,
    model: str = "default",
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    random_seed: int = 0,
    progressbar: bool = False,
    **options,
):
    """Propose the next ``n`` runs of an experiment and record them in its ledger.

    A shortcut for ``Experiment(ledger, model=..., draws=..., ...).propose(n, strategy,
    **options)``: refits the posterior only when results changed since the last fit.

    Parameters
    ----------
    ledger : str or path
        The experiment's ledger (created by ``Experiment.create`` or ``bayesmix init``).
    n : int, default 8
        Runs to propose.
    strategy : {"thompson", "optimum-info", "bald", "random"}, default "thompson"
        Acquisition strategy (an initial design when no run is completed yet).
    model : str, default "default"
        Model specification of the posterior (see :func:`bayesmix.fit`).
    draws, tune, chains : int
        MCMC settings of a refit.
    random_seed : int, default 0
        Seed of the fit and the proposal (``seed`` is its deprecated name).
    progressbar : bool, default False
        Show the sampler's progress (``progress`` is its deprecated name).
    **options
        Passed to :meth:`bayesmix.Experiment.propose` (``out``, ``pool``, ``target``,
        ``weights``, ``min_distance``, ...).

    Returns
    -------
    pandas.DataFrame
        The proposed runs (run, round, strategy, mix.<domain>...), as recorded.

    Examples
    --------
    >>> import bayesmix as bm
    >>> exp = bm.Experiment.create("exp.db", ["web", "code"])   # doctest: +SKIP
    >>> bm.propose("exp.db", 4)                                 # doctest: +SKIP
    """
    from bayesmix.loop.experiment import Experiment

    exp = Experiment(
        ledger,
        model=model,
        draws=draws,
        tune=tune,
        chains=chains,
        random_seed=random_seed,
        progressbar=progressbar,
    )
    return exp.propose(n, strategy, **options)
