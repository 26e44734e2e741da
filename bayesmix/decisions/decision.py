"""The decision: which mixture to train the big run on, and how sure we are.

:func:`decide` runs a :class:`~bayesmix.decisions.problem.DecisionProblem` on a fitted posterior
(or on :class:`LawDraws`) in named steps: resolve the problem on the posterior's domains
(weights, constraints, baseline), compute every draw's own optimum
(:func:`bayesmix.decisions.optimize.draw_optima`), choose the mixture
(:func:`bayesmix.decisions.optimize.minimize_objective`, or
:func:`bayesmix.decisions.guarantees.minimize_guaranteed` with guarantees), compare
recommendation and baseline draw by draw, and compare with the decision at the proxies' scale.
Any mixing law works: losses come from the posterior's law (:meth:`bayesmix.laws.Law.mean`), the
optimiser from its gradient; the report says whether the optimiser converged and, for a
non-convex law, how many of its starts reached the best value. The result is a
:class:`~bayesmix.decisions.decision_report.DecisionReport`.

Loss intervals have mass ``ci_prob`` over posterior draws, equal-tailed by default
(``ci_kind="hdi"``: highest density; :func:`bayesmix.posterior.intervals.credible_interval`).
"mean/median/lower/upper" describe the law's expected loss (uncertainty about the law); with a
Posterior the report adds ``pred_lower``/``pred_upper``, the posterior predictive interval of one
run's measured loss.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from bayesmix._compat import CI_PROB, PROGRESS, SEED, renamed_kwargs
from bayesmix.data.constraints import Constraints
from bayesmix.decisions.decision_report import OVERALL, DecisionReport
from bayesmix.decisions.draws import LawDraws, as_law_draws
from bayesmix.decisions.feasible import check_constraints
from bayesmix.decisions.guarantees import minimize_guaranteed
from bayesmix.decisions.inputs import problem_from, resolve_baseline, resolve_weights
from bayesmix.decisions.objectives import Objective
from bayesmix.decisions.optimize import (
    Optimum,
    draw_optima,
    minimize_objective,
    optima_dataarray,
    optimum_spread,
)
from bayesmix.decisions.problem import DecisionProblem
from bayesmix.decisions.scale import ScaleShift, proxy_scale, scale_shift
from bayesmix.posterior.extrapolation import stored_backtest
from bayesmix.posterior.intervals import credible_interval

__all__ = ["DecisionProblem", "DecisionReport", "decide"]


# ------------------------------------------------------------------------------ deciding
@renamed_kwargs(**CI_PROB, **SEED, **PROGRESS)
def decide(
    source,
    problem: DecisionProblem | None = None,
    *,
    weights=None,
    target: str | None = None,
    constraints: Constraints | None = None,
    objective: Objective | str | None = None,
    baseline=None,
    ci_prob: float | None = None,
    ci_kind: str | None = None,
    allow_subset: bool | None = None,
    per_draw: bool = True,
    n_starts: int | None = None,
    random_seed: int = 0,
    progressbar: bool = False,
    inputs: Mapping | None = None,
    proxy_inputs: Mapping | None = None,
    max_extrapolation: float | None = None,
    guarantees=None,
) -> DecisionReport:
    """Choose the mixture to train on and report how sure the choice is.

    Parameters
    ----------
    source : Posterior or LawDraws
        A fitted posterior (any law) or draws of a law
        (:class:`bayesmix.decisions.draws.LawDraws`).
    problem : DecisionProblem, optional
        The decision to make: constraints, weights or target, objective, baseline,
        guarantees, intervals, target scale. Default: the problem its fields below describe.
    weights, target, constraints, objective, baseline, ci_prob, ci_kind : optional
        Fields of :class:`~bayesmix.decisions.problem.DecisionProblem` (documented there, with
        their defaults), as a convenience instead of ``problem`` (not with it); ``prob`` is
        ``ci_prob``'s deprecated name.
    allow_subset, inputs, proxy_inputs, max_extrapolation, guarantees : optional
        Fields of the problem too: weights naming some validation domains, the scale
        ``{"n_params": N, "tokens": D}`` the mixture is for and the proxies' scale to compare
        with, the largest extrapolation factor, chance constraints per validation domain.
    per_draw : bool, default True
        Also compute every draw's optimum (the spread of the optimum).
    n_starts : int, optional
        Optimiser starts (default: more for a non-convex law, see
        :func:`bayesmix.decisions.optimize.minimize_objective`).
    random_seed : int, default 0
        Seed of the optimiser's random starts and the predictive draws (``seed`` is its
        deprecated name).
    progressbar : bool, default False
        Print progress lines to stderr (``progress`` is its deprecated name).

    Returns
    -------
    DecisionReport
        Recommendation, loss intervals of it and the baseline, their paired comparison, the
        spread of the optimum and notes (``print(report)`` shows it as text).

    Examples
    --------
    Decide on draws of a known law (here 100 draws close to a simulated truth; a fitted
    ``bm.Posterior`` is used the same way):

    >>> import numpy as np
    >>> import bayesmix as bm
    >>> from bayesmix.decisions.draws import LawDraws
    >>> runs, truth = bm.simulate(["web", "code", "books"], n_runs=12, random_seed=0)
    >>> rng = np.random.default_rng(1)
    >>> params = {k: truth[k] * rng.normal(1, 0.02, (100, *np.shape(truth[k])))
    ...           for k in ("m", "rho", "t")}
    >>> draws = LawDraws(params, runs.train_domains, runs.eval_domains)
    >>> cons = bm.Constraints.build(runs.train_domains, max_share={"code": 0.3})
    >>> rec = bm.decide(draws, bm.DecisionProblem(constraints=cons), random_seed=0)
    >>> bool(cons.contains(rec.mixture.to_numpy()))
    True
    >>> round(float(rec.mixture.sum()), 6)
    1.0
    >>> rec.losses.columns.tolist()
    ['mixture', 'eval_domain', 'weight', 'mean', 'median', 'lower', 'upper']
    """
    fields = {
        "weights": weights,
        "target": target,
        "constraints": constraints,
        "objective": objective,
        "baseline": baseline,
        "ci_prob": ci_prob,
        "ci_kind": ci_kind,
        "allow_subset": allow_subset,
        "inputs": inputs,
        "proxy_inputs": proxy_inputs,
        "max_extrapolation": max_extrapolation,
        "guarantees": guarantees,
    }
    problem = problem_from(problem, fields, DecisionProblem)
    return _decide(source, problem, per_draw, n_starts, random_seed, _progress(progressbar))


def _decide(source, problem: DecisionProblem, per_draw, n_starts, seed, say) -> DecisionReport:
    """The decision's named steps, then the report."""
    setting = _resolve(source, problem)
    spread = _optimum_spread(setting, problem, per_draw, seed, say)
    say(f"optimising the {problem.objective} objective")
    choice = _choose(setting, problem, spread.starts, n_starts, seed)
    setting.notes += _choice_notes(choice.best, setting)
    losses, comparison, p_beat = _compare(setting, problem, choice.best.mixture, seed)
    shift = _scale_shift(setting, problem, seed, say)
    say("done")
    draws = setting.draws
    return DecisionReport(
        scale_shift=shift,
        inputs=dict(draws.inputs),
        recommendation=_recommendation(setting, choice.best.mixture),
        losses=losses,
        comparison=comparison,
        optimum_spread=spread.table,
        draw_optima=spread.draw_optima,
        p_beats_baseline=p_beat,
        objective=str(problem.objective),
        objective_description=problem.objective.describe(),
        objective_value=choice.best.value,
        weights_description=setting.weights_description,
        baseline_label=setting.baseline_label,
        prob=problem.ci_prob,
        n_samples=draws.n_samples,
        constraints=setting.constraints,
        diagnostics_warning=draws.diagnostics_warning,
        source=draws.source,
        notes=setting.notes,
        law=draws.law.name,
        optimizer_status=choice.status,
        guarantees=choice.guarantees,
        unguaranteed_value=choice.unguaranteed_value,
        ci_kind=problem.ci_kind,
    )


def _progress(progressbar: bool) -> Callable[[str], None]:
    """A function printing ``[optimize] message`` lines to stderr, or doing nothing."""

    def say(msg: str) -> None:
        if progressbar:
            print(f"[optimize] {msg}", file=sys.stderr, flush=True)

    return say


# ------------------------------------------------------------------------------ the steps
@dataclass
class _Setting:
    """The problem resolved on one posterior's domains, and the notes gathered so far."""

    draws: LawDraws
    posterior: Any  # the Posterior, or None for plain draws
    constraints: Constraints
    weights: np.ndarray  # (K,) normalised, over the validation domains
    weights_description: str
    baseline: np.ndarray  # (M,) over the training domains
    baseline_label: str
    notes: list[str]


@dataclass
class _Spread:
    """Every draw's optimum (sample, train_domain), its summary table, and the mean optimum as
    an extra start of the optimiser (1, M); all None without per-draw optima."""

    draw_optima: xr.DataArray | None = None
    table: pd.DataFrame | None = None
    starts: np.ndarray | None = None


@dataclass
class _Choice:
    """The chosen mixture, one line on how the optimiser ended, and the guarantees' table with
    the objective's value without them (None without guarantees)."""

    best: Optimum
    status: str
    guarantees: pd.DataFrame | None = None
    unguaranteed_value: float | None = None


def _resolve(source, problem: DecisionProblem) -> _Setting:
    """Draws at the problem's scale; weights, baseline and constraints over the posterior's
    domains; notes on zero weights, the baseline, the scale and stored backtests."""
    draws = as_law_draws(source)
    if problem.inputs is not None:
        draws = dataclasses.replace(draws, inputs=problem.inputs)
    posterior = None if isinstance(source, LawDraws) else source
    constraints = check_constraints(problem.constraints, draws.train_domains)
    w, w_desc = resolve_weights(
        draws.eval_domains, problem.weights, problem.target, allow_subset=problem.allow_subset
    )
    base, base_label = resolve_baseline(draws.train_domains, problem.baseline)
    notes = []
    zero = [d for d, v in zip(draws.eval_domains, w) if v == 0]
    if zero and problem.target is None:
        notes.append(f"weight 0 (not in the weights) for: {', '.join(zero)}")
    if not constraints.contains(base):
        notes.append("the baseline mixture is outside the constraints")
    if posterior is not None and draws.inputs:
        notes += posterior.check_scale(**draws.inputs, **problem.scale_options)
    if posterior is not None:
        notes += _backtest_notes(posterior)
    return _Setting(draws, posterior, constraints, w, w_desc, base, base_label, notes)


def _optimum_spread(
    setting: _Setting, problem: DecisionProblem, per_draw: bool, seed, say
) -> _Spread:
    """Every draw's own optimum and its spread (a note when some did not converge)."""
    if not per_draw:
        return _Spread()
    draws = setting.draws
    say(f"per-draw optima of {draws.n_samples} draws")
    t0 = time.perf_counter()
    optima, ok = draw_optima(draws, setting.constraints, setting.weights, random_seed=seed)
    say(f"per-draw optima done in {time.perf_counter() - t0:.2f} s")
    if not ok.all():
        setting.notes.append(
            f"{int((~ok).sum())} of {len(ok)} per-draw optima did not converge "
            "(kept, feasible, possibly slightly off; the optimum spread may be "
            "a little wide)"
        )
    da = optima_dataarray(optima, draws.train_domains)
    table = optimum_spread(da, ci_prob=problem.ci_prob, ci_kind=problem.ci_kind)
    return _Spread(da, table, optima.mean(axis=0)[None, :])


def _choose(setting: _Setting, problem: DecisionProblem, starts, n_starts, seed) -> _Choice:
    """The mixture optimising the objective, under the guarantees when there are any."""
    draws, objective = setting.draws, problem.objective
    if not problem.guarantees:
        best = minimize_objective(
            draws,
            setting.constraints,
            setting.weights,
            objective,
            baseline=setting.baseline if objective.uses_baseline else None,
            n_starts=n_starts,
            extra_starts=starts,
            random_seed=seed,
        )
        status = (
            best.status()
            if objective.kind != "minimax"
            else "SLSQP on the epigraph form (exact max over validation domains)"
        )
        return _Choice(best, status)
    got = minimize_guaranteed(
        draws,
        setting.constraints,
        setting.weights,
        objective,
        guarantees=problem.guarantees,
        baseline=setting.baseline,
        extra_starts=starts,
        random_seed=seed,
        n_starts=n_starts or 4,
    )
    best = Optimum(
        mixture=got.mixture,
        value=got.value,
        objective=objective,
        train_domains=tuple(draws.train_domains),
        starts=[got.value],
        convex=bool(draws.law.convex),
    )
    status = (
        f"SLSQP with {len(got.guarantees)} chance constraint(s) (Harrell-Davis "
        f"quantiles) from {got.n_starts} starts; every guarantee checked exactly on "
        f"the {draws.n_samples} draws"
    )
    return _Choice(best, status, got.table(), got.unguaranteed_value)


def _choice_notes(best: Optimum, setting: _Setting) -> list[str]:
    """Notes on how the optimiser ended and where the recommendation lies."""
    notes = []
    if not best.converged:
        notes.append(f"the optimiser reported: {best.message} (best feasible start kept)")
    if best.fragile:
        notes.append(
            f"law {setting.draws.law.name!r} is not convex and only {best.n_agree} of "
            f"{best.n_starts} optimiser starts reached the best value (the others "
            "stopped at local optima): the recommendation may be fragile; rerun with "
            "more optimiser starts and a few seeds to check it"
        )
    if setting.posterior is not None:
        rec = pd.DataFrame(
            [best.mixture], index=["recommended"], columns=setting.draws.train_domains
        )
        notes += setting.posterior.mixture_range().notes(rec, "the recommended mixture")
    return notes


def _recommendation(setting: _Setting, mixture: np.ndarray) -> pd.DataFrame:
    """train_domain, share, baseline, min_allowed, max_allowed; with a law that counts repeated
    data (:meth:`bayesmix.laws.Law.epochs`) and a token budget, also ``epochs`` and
    ``baseline_epochs`` (passes over each domain's unique data at the target budget)."""
    draws = setting.draws
    table = pd.DataFrame(
        {
            "train_domain": list(draws.train_domains),
            "share": mixture,
            "baseline": setting.baseline,
            "min_allowed": setting.constraints.lower,
            "max_allowed": setting.constraints.upper,
        }
    )
    passes = draws.law.epochs(np.vstack([mixture, setting.baseline]), draws.params, draws.inputs)
    if passes is not None:
        table["epochs"], table["baseline_epochs"] = passes[0], passes[1]
    return table


def _scale_shift(setting: _Setting, problem: DecisionProblem, seed, say) -> ScaleShift | None:
    """The decision at the proxies' scale vs the target's, for a law over model size and
    tokens with a target scale (None otherwise, or when the proxies' scale is unknown)."""
    draws = setting.draws
    if not draws.inputs or not {"n_params", "tokens"} <= set(draws.law.inputs):
        return None
    proxy = problem.proxy_inputs
    if proxy is None and setting.posterior is not None:
        proxy = proxy_scale(setting.posterior)
    if proxy is None:
        return None
    say("comparing with the decision at the proxies' scale")
    return scale_shift(
        draws,
        setting.constraints,
        setting.weights,
        target=draws.inputs,
        proxy=proxy,
        ci_prob=problem.ci_prob,
        random_seed=seed,
    )


def _backtest_notes(posterior) -> list[str]:
    """The backtest verdict and learned extrapolation error stored with a target-scale
    posterior (:mod:`bayesmix.scaling.backtesting`), or a warning when it extrapolates without
    one."""
    bt = stored_backtest(posterior)
    out = [bt["verdict"]] if bt else []
    cal = posterior.extrapolation
    if cal is not None:
        out.append(
            cal.describe() + " (in every interval here; the error shared by both mixtures "
            "cancels in the improvement, the per-mixture error does not)"
        )
    elif (posterior.settings.get("pipeline") == "nested") and not bt:
        out.append(
            "target-scale posterior without backtests: its intervals carry no learned "
            "extrapolation error (bayesmix backtest)"
        )
    return out


def _compare(setting: _Setting, problem: DecisionProblem, rec: np.ndarray, seed):
    """Loss intervals of both mixtures per domain and overall, and their paired comparison:
    (losses, comparison, P(recommended beats the baseline overall))."""
    draws, w, posterior = setting.draws, setting.weights, setting.posterior
    prob, ci_kind = problem.ci_prob, problem.ci_kind
    mixes = np.vstack([rec, setting.baseline])

    def with_overall(da) -> np.ndarray:  # (S, 2, K + 1): per domain, then the weighted sum
        v = da.stack(sample=("chain", "draw")).transpose("sample", "mixture", "eval_domain")
        return np.concatenate([v.values, (v.values @ w)[..., None]], axis=-1)

    pred = None
    if posterior is not None:
        pred = posterior.predict(
            pd.DataFrame(
                mixes, columns=list(draws.train_domains), index=["recommended", "baseline"]
            ),
            random_seed=seed,
            warn=False,
            **problem.scale_options,
            **draws.inputs,
        )  # decide() notes extrapolation
    if pred is not None and (
        posterior.extrapolation is not None or posterior.imputation_shift is not None
    ):
        # a learned extrapolation error or a nested pipeline's imputation shifts: the expected
        # losses carry them (a per-mixture error widens the improvement; what both mixtures
        # share cancels in it)
        values = with_overall(pred.mean)
    else:
        per_domain = draws.mean_loss(mixes)  # (S, 2, K), from the law's mean
        values = np.concatenate([per_domain, (per_domain @ w)[..., None]], axis=-1)
    domains = list(draws.eval_domains) + [OVERALL]
    weights = list(w) + [1.0]
    rows = []
    for j, name in enumerate(("recommended", "baseline")):
        lo, hi = credible_interval(values[:, j], prob, ci_kind=ci_kind)
        med = np.quantile(values[:, j], 0.5, axis=0)
        for i, dom in enumerate(domains):
            rows.append(
                {
                    "mixture": name,
                    "eval_domain": dom,
                    "weight": weights[i],
                    "mean": values[:, j, i].mean(),
                    "median": med[i],
                    "lower": lo[i],
                    "upper": hi[i],
                }
            )
    losses = pd.DataFrame(rows)
    if pred is not None:
        lo, hi = credible_interval(
            with_overall(pred.predictive), prob, ci_kind=ci_kind, skipna=True
        )
        losses["pred_lower"] = lo.reshape(-1)  # (2, K + 1)
        losses["pred_upper"] = hi.reshape(-1)
    diff = values[:, 1] - values[:, 0]  # baseline - recommended: > 0 means recommended better
    lo, hi = credible_interval(diff, prob, ci_kind=ci_kind)
    comparison = pd.DataFrame(
        {
            "eval_domain": domains,
            "improvement_mean": diff.mean(axis=0),
            "improvement_lower": lo,
            "improvement_upper": hi,
            "p_better": (diff > 0).mean(axis=0),
            "p_worse": (diff < 0).mean(axis=0),
        }
    )
    return losses, comparison, float(comparison["p_better"].iloc[-1])
