"""Compare mixing laws the Bayesian way: PSIS-LOO ELPD tables, and K-fold by held-out runs.

Two questions, two tools:

* :func:`compare` - which law predicts new data best, from the fits alone? PSIS-LOO (ArviZ's
  ``arviz_stats.loo``/``compare``) on each posterior's stored ``log_likelihood`` group. By default
  the unit left out is a run (``var_name="run_loss"``: the joint log density of a run's losses on
  all its validation domains), because a new mixture is what a user predicts; ``"loss"`` leaves
  out single (run, eval_domain) losses. When Pareto k is high the importance-sampling estimate
  is unreliable and the honest check is to refit:
* :func:`kfold` - refit each law on K-1 folds of runs and predict the held-out runs: predictive
  MAE, Spearman rank correlation, interval coverage and held-out log predictive density.

:func:`compare_laws` does both: the PSIS-LOO table, checked by K-fold where a Pareto k is high
(or always, or never): ``bayesmix compare`` calls it.

Losses are in nats per token; ELPDs are sums of log densities of losses over runs (higher is
better; differences are meaningful against their standard error ``dse``).
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix._compat import CI_PROB, SEED, rename_kwargs, renamed_kwargs
from bayesmix.data.table import RunTable
from bayesmix.model.spec import ModelSpec, load_spec
from bayesmix.posterior.intervals import check_prob, credible_interval
from bayesmix.posterior.posterior import Posterior

#: Folds of the K-fold that :func:`compare_laws` runs where a Pareto k is high (``kfold="auto"``).
AUTO_KFOLD = 5
#: Mass of the predictive intervals whose coverage K-fold scores, by default.
KFOLD_CI_PROB = 0.9
#: The log-likelihood variables a saved posterior holds (see :mod:`bayesmix.posterior.posterior`).
VAR_NAMES = ("run_loss", "loss")
#: Columns of :func:`compare`'s table, in order.
COMPARE_COLUMNS = [
    "model",
    "spec",
    "rank",
    "elpd_loo",
    "se",
    "elpd_diff",
    "dse",
    "p_loo",
    "weight",
    "n_high_pareto_k",
    "max_pareto_k",
    "warning",
]


class IncomparableError(errors.BayesmixError):
    """Posteriors fitted to different data (runs, domains or losses): their ELPDs are sums over
    different observations and cannot be compared."""


# ---------------------------------------------------------------------------------- same data
def data_difference(a: RunTable, b: RunTable) -> str | None:
    """How two fit tables differ (a short phrase), or None when they are the same data."""
    if a.train_domains != b.train_domains:
        return "training domains differ"
    if a.eval_domains != b.eval_domains:
        return "validation domains differ"
    if set(a.runs) != set(b.runs):
        return (
            f"runs differ ({a.n_runs} vs {b.n_runs} runs, {len(set(a.runs) ^ set(b.runs))} "
            "not in both)"
        )
    if a.runs != b.runs:
        return "the same runs in another order"
    ta, tb = a.to_tidy(), b.to_tidy()
    if list(ta.columns) != list(tb.columns):
        return "columns differ"
    for col in ta.columns:
        x, y = ta[col].to_numpy(), tb[col].to_numpy()
        same = (x == y) if col == "run" else ((x == y) | (np.isnan(x) & np.isnan(y)))
        if not np.all(same):
            return f"values of {col!r} differ"
    return None


def check_same_data(posteriors: Mapping[str, Posterior]) -> RunTable:
    """Raise :class:`IncomparableError` naming the first pair fitted to different data;
    return the shared fit table."""
    names = list(posteriors)
    first = posteriors[names[0]].fit_data()
    for name in names[1:]:
        why = data_difference(first, posteriors[name].fit_data())
        if why:
            raise IncomparableError(
                f"{names[0]} and {name} were fitted to different data "
                f"({why}) and cannot be compared",
                hint="fit every law to the same runs",
            )
    return first


# ---------------------------------------------------------------------------------- PSIS-LOO
def loo(posterior: Posterior, var_name: str = "run_loss"):
    """``arviz_stats.loo`` of a posterior with pointwise results (ArviZ's ELPDData: ``elpd``,
    ``se``, ``p``, ``pareto_k`` per unit, ``good_k`` the Pareto-k threshold). ArviZ's warning
    about high k is silenced: the caller reports the count."""
    import arviz_stats

    _check_var_name(var_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return arviz_stats.loo(posterior.tree, var_name=var_name, pointwise=True)


def compare(
    posteriors: Mapping[str, Posterior], var_name: str = "run_loss", *, method: str = "stacking"
) -> pd.DataFrame:
    """ELPD table of posteriors fitted to the same data, best first (PSIS-LOO via ArviZ).

    ``posteriors``: ``{name: Posterior}`` (at least two). ``var_name``: ``"run_loss"`` (leave
    one run out: the default) or ``"loss"`` (leave one (run, eval_domain) loss out). Columns:

    * ``model`` (the name), ``spec`` (its model specification), ``rank`` (0 = best);
    * ``elpd_loo``, ``se``: expected log predictive density of the held-out units (sum over
      units, log densities of losses in nats per token) and its standard error;
    * ``elpd_diff``, ``dse``: difference to the best model (<= 0) and its standard error;
    * ``p_loo``: effective number of parameters; ``weight``: ``method`` weights (sum to 1);
    * ``n_high_pareto_k``: units whose Pareto k exceeds ArviZ's threshold
      min(1 - 1/log10(S), 0.7) for S draws (0.7 from 2200 draws on, e.g. the default 4 x 1000;
      stricter for fewer) - there the PSIS estimate is unreliable (check with :func:`kfold`);
      ``max_pareto_k``; ``warning``: that, and a failed diagnostics gate, in words ("" if none).

    ``df.attrs`` holds ``var_name``, ``n_units`` and ``pareto_k_threshold`` (per model).
    Raises :class:`IncomparableError` for posteriors of different data.
    """
    import arviz_stats

    if len(posteriors) < 2:
        raise errors.BayesmixError(f"compare needs at least two posteriors, got {len(posteriors)}")
    _check_var_name(var_name)
    check_same_data(posteriors)
    elpds = {name: loo(post, var_name) for name, post in posteriors.items()}
    for name, res in elpds.items():
        if not np.isfinite(float(res.elpd)):
            raise errors.BayesmixError(
                f"posterior {name}: its PSIS-LOO elpd is not finite (its draws hold NaN or "
                "infinite log densities), so it cannot be ranked",
                hint="refit it, or leave it out",
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        table = arviz_stats.compare(elpds, method=method, round_to="none")
    rows = []
    for name in table.index:
        res, post = elpds[name], posteriors[name]
        k = np.asarray(res.pareto_k).ravel()
        n_high = int(np.sum(k > res.good_k))
        notes = []
        if n_high:
            notes.append(
                f"{n_high} of {k.size} Pareto k > {res.good_k:.2f}: PSIS-LOO "
                "unreliable, check with K-fold"
            )
        if post.diagnostics_warning:
            notes.append("failed the MCMC diagnostics gate")
        row = table.loc[name]
        rows.append(
            {
                "model": str(name),
                "spec": post.spec.name,
                "rank": int(row["rank"]),
                "elpd_loo": float(row["elpd"]),
                "se": float(row["se"]),
                "elpd_diff": float(row["elpd_diff"]),
                "dse": float(row["dse"]),
                "p_loo": float(row["p"]),
                "weight": float(row["weight"]),
                "n_high_pareto_k": n_high,
                "max_pareto_k": float(k.max()),
                "warning": "; ".join(notes),
            }
        )
    out = pd.DataFrame(rows, columns=COMPARE_COLUMNS)
    out.attrs.update(
        {
            "var_name": var_name,
            "n_units": int(next(iter(elpds.values())).n_data_points),
            "pareto_k_threshold": {n: float(e.good_k) for n, e in elpds.items()},
        }
    )
    return out


def _check_var_name(var_name: str) -> None:
    if var_name not in VAR_NAMES:
        raise errors.OptionError(
            f"unknown log-likelihood variable {var_name!r}",
            hint=f"use one of {', '.join(VAR_NAMES)}",
        )


# ---------------------------------------------------------------------------------- K-fold
@dataclass
class KFoldResult:
    """K-fold cross-validation by held-out runs (losses in nats per token).

    ``summary``: one row per model - ``model, spec, folds, n_runs, n_obs, mae`` (mean absolute
    error of the posterior mean loss over held-out (run, eval_domain) losses), ``spearman``
    (rank correlation over held-out runs of the mean loss over a run's observed domains,
    predicted vs observed), ``coverage`` (share of held-out losses inside the equal-tailed
    ``ci_prob`` interval of the posterior predictive), ``elpd_kfold``, ``se`` (sum over
    held-out runs of the log predictive density of a run's losses, comparable to ``elpd_loo``
    of ``run_loss``, and its standard error), ``failed_fits`` (fold fits that failed the
    diagnostics gate).
    ``by_domain``: ``model, eval_domain, n_obs, mae, spearman, coverage, elpd_kfold`` per
    validation domain. ``pointwise``: ``model, fold, run, eval_domain, loss, mean, lower, upper,
    lpd`` per held-out loss. ``folds``: the held-out run ids of each fold.
    """

    summary: pd.DataFrame
    by_domain: pd.DataFrame
    pointwise: pd.DataFrame
    folds: list[list[str]]
    ci_prob: float

    @property
    def prob(self) -> float:
        """Deprecated name of :attr:`ci_prob` (FutureWarning; goes in bayesmix
        :data:`bayesmix._compat.REMOVAL_VERSION`)."""
        rename_kwargs("KFoldResult", {"prob": self.ci_prob}, CI_PROB)
        return self.ci_prob


@renamed_kwargs(**SEED)
def make_folds(run_ids, k: int, random_seed: int | None = 0) -> list[list[str]]:
    """Split run ids into ``k`` folds of near-equal size: a permutation drawn with
    ``random_seed``, cut in order (same ids, k and seed: same folds). Every run is in exactly
    one fold."""
    run_ids = [str(r) for r in run_ids]
    k = int(k)
    if not 2 <= k <= len(run_ids):
        raise errors.OptionError(
            f"k={k} is not a number of folds from 2 to the number of runs ({len(run_ids)})",
            param="k",
        )
    perm = np.random.default_rng(random_seed).permutation(len(run_ids))
    return [[run_ids[i] for i in part] for part in np.array_split(perm, k)]


@dataclass(frozen=True)
class FoldPlan:
    """What every law's K-fold shares: the folds, the seed of fold 0's refit (fold ``i`` uses
    ``random_seed + i``), the interval probability scored and where progress lines go."""

    folds: list[list[str]]
    random_seed: int | None
    ci_prob: float
    say: Callable[[str], None]


@dataclass
class LawScore:
    """One law's K-fold: its summary row, its rows per validation domain, its held-out
    losses (columns of :class:`KFoldResult`)."""

    summary: dict
    by_domain: list[dict]
    pointwise: pd.DataFrame


@renamed_kwargs(**SEED, **CI_PROB)
def kfold(
    models: Mapping[str, Posterior | ModelSpec | str],
    runs: RunTable | None = None,
    *,
    k: int = 5,
    random_seed: int | None = 0,
    draws: int | None = None,
    tune: int | None = None,
    chains: int | None = None,
    ci_prob: float = KFOLD_CI_PROB,
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
) -> KFoldResult:
    """Refit each model on K-1 folds of runs and score its predictions of the held-out runs.

    ``models``: ``{name: Posterior | ModelSpec | spec name or TOML path}``. A posterior
    contributes its specification and, when ``runs`` is not given, its fit data (then all
    posteriors must share it); a specification needs ``runs``. Folds are by run, the same for
    every model (:func:`make_folds` with ``random_seed``), so the comparison is paired.
    ``draws``/``tune``/``chains``: per refit; None takes a posterior's own settings (sampler
    settings too), or :func:`bayesmix.inference.fitting.fit`'s defaults for a specification.
    The fit of fold ``i`` uses seed ``random_seed + i``. ``ci_prob``: the mass of the
    predictive intervals whose coverage is scored. Refits of one specification share one
    compiled model. Progress lines go to ``log`` (default: stderr) unless ``quiet``.
    (``seed`` and ``prob`` are the deprecated names of ``random_seed`` and ``ci_prob``.)
    """
    if not models:
        raise errors.BayesmixError("kfold needs at least one model")
    ci_prob = check_prob(ci_prob)
    runs = _kfold_runs(models, runs)
    plan = FoldPlan(
        make_folds(runs.runs, k, random_seed),
        random_seed,
        ci_prob,
        (lambda _msg: None) if quiet else (log or _stderr),
    )
    counts = {"draws": draws, "tune": tune, "chains": chains}
    scores = [_kfold_law(name, model, runs, plan, counts) for name, model in models.items()]
    summary = pd.DataFrame([s.summary for s in scores])
    by_domain = pd.DataFrame([row for s in scores for row in s.by_domain])
    for df in (summary, by_domain):
        df.attrs["ci_prob"] = ci_prob
    return KFoldResult(
        summary=summary,
        by_domain=by_domain,
        pointwise=pd.concat([s.pointwise for s in scores], ignore_index=True),
        folds=plan.folds,
        ci_prob=ci_prob,
    )


def _kfold_runs(models: Mapping[str, Any], runs: RunTable | None) -> RunTable:
    """The runs to split: ``runs``, else the posteriors' shared fit data."""
    if runs is not None:
        return runs
    posts = {n: m for n, m in models.items() if isinstance(m, Posterior)}
    if len(posts) != len(models):
        raise errors.BayesmixError(
            "kfold of a model specification needs the runs", hint="pass runs=RunTable"
        )
    return check_same_data(posts)


def _kfold_law(name: str, model, runs: RunTable, plan: FoldPlan, counts: dict) -> LawScore:
    """Refit one law on every fold's training runs and score its held-out predictions."""
    from bayesmix.model.model import prepare_data, select_for_fit

    post, spec = (model, model.spec) if isinstance(model, Posterior) else (None, load_spec(model))
    fit_kw = _fit_settings(post, **counts)
    table = select_for_fit(runs, law=spec.law)  # one record per run, as a fit uses
    inputs = prepare_data(table, spec.law)
    frames, run_lpd, failed = [], [], 0
    for i in range(len(plan.folds)):
        points, lpd, ok = _fold(name, spec, table, inputs, i, plan, fit_kw)
        frames.append(points)
        run_lpd.append(lpd)
        failed += not ok
    points = pd.concat(frames, ignore_index=True)
    points.insert(0, "model", name)
    lpd = np.concatenate(run_lpd)
    summary = {
        "model": name,
        "spec": spec.name,
        "folds": len(plan.folds),
        "n_runs": table.n_runs,
        "n_obs": len(points),
        **_metrics(points, by_run=True),
        "elpd_kfold": float(lpd.sum()),
        "se": float(np.sqrt(lpd.size * np.var(lpd, ddof=1))),
        "failed_fits": failed,
    }
    by_domain = []
    for dom in table.eval_domains:
        sub = points[points["eval_domain"] == dom]
        by_domain.append(
            {
                "model": name,
                "eval_domain": dom,
                "n_obs": len(sub),
                **_metrics(sub, by_run=False),
                "elpd_kfold": float(sub["lpd"].sum()),
            }
        )
    return LawScore(summary, by_domain, points)


def _fold(name, spec, table: RunTable, inputs, i: int, plan: FoldPlan, fit_kw: dict):
    """Fold ``i`` of one law: (its held-out losses scored, each held-out run's log predictive
    density, whether the refit passed its gate)."""
    from bayesmix.inference.fitting import fit

    held = plan.folds[i]
    held_set = set(held)
    train = table.select([r for r in table.runs if r not in held_set])
    start = time.perf_counter()
    where = f"kfold {name}: fold {i + 1}/{len(plan.folds)}"
    plan.say(f"{where}: fitting {train.n_runs} runs, predicting {len(held)} held out")
    seed = None if plan.random_seed is None else plan.random_seed + i
    refit = fit(train, spec, random_seed=seed, warn=False, **fit_kw)
    # Scored on the whole table (the held-out runs alone may lack a domain), then cut.
    ll = refit.log_likelihood(table)
    loss_ll = ll["loss"].isel(obs=np.isin(ll["obs_run"].values, held))
    position = {r: j for j, r in enumerate(table.runs)}
    points = _score_fold(
        refit, table, held, inputs, position, loss_ll, plan.ci_prob, plan.random_seed, fold=i
    )
    lpd = _log_mean_density(ll["run_loss"].sel(run=held), "run")
    plan.say(f"{where} done in {time.perf_counter() - start:.1f} s")
    return points, lpd, refit.diagnostics.ok


# ---------------------------------------------------------------------------------- both
@dataclass
class LawComparison:
    """What :func:`compare_laws` found: ``loo`` - :func:`compare`'s ELPD table; ``table`` - the
    same with the K-fold summary's columns (``kfold_mae``, ``kfold_coverage``, ...) when K-fold
    ran; ``kfold`` - the K-fold result or None; ``k`` - its folds (0: not run);
    ``high_pareto_k`` - whether some unit's Pareto k is high (PSIS-LOO unreliable); ``auto`` -
    whether K-fold ran for that reason (``kfold="auto"``)."""

    loo: pd.DataFrame
    table: pd.DataFrame
    kfold: KFoldResult | None
    k: int
    high_pareto_k: bool
    auto: bool


@renamed_kwargs(**SEED, **CI_PROB)
def compare_laws(
    posteriors: Mapping[str, Posterior],
    var_name: str = "run_loss",
    *,
    kfold: int | str = "auto",
    random_seed: int | None = 0,
    draws: int | None = None,
    tune: int | None = None,
    chains: int | None = None,
    ci_prob: float = KFOLD_CI_PROB,
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
) -> LawComparison:
    """PSIS-LOO's ELPD table (:func:`compare`), checked by K-fold by held-out runs
    (:func:`kfold`) where PSIS-LOO is unreliable or when asked.

    ``kfold``: ``"auto"`` (:data:`AUTO_KFOLD` folds when some Pareto k is high, else none), 0
    (never) or K >= 2 folds (always). ``random_seed``, ``draws``, ``tune``, ``chains``,
    ``ci_prob``, ``quiet`` and ``log`` go to :func:`kfold`. Every setting is checked before any
    refit.
    """
    check_kfold(kfold)
    for name, value in (("draws", draws), ("tune", tune), ("chains", chains)):
        if value is not None and int(value) < 1:
            raise errors.OptionError(f"{name}={value} is not >= 1", param=name)
    check_prob(ci_prob)
    loo_table = compare(posteriors, var_name)  # refuses posteriors of different data
    high = bool((loo_table["n_high_pareto_k"] > 0).any())
    k = (AUTO_KFOLD if high else 0) if kfold == "auto" else int(kfold)
    if not k:
        return LawComparison(loo_table, loo_table, None, 0, high, auto=False)
    say = (lambda _msg: None) if quiet else (log or _stderr)
    if kfold == "auto":
        say(f"Pareto k is high: checking with {k}-fold cross-validation by held-out runs")
    result = _checked(posteriors, k, random_seed, draws, tune, chains, ci_prob, say)
    kf = result.summary.drop(columns=["spec"]).rename(
        columns=lambda c: c if c == "model" else f"kfold_{c}"
    )
    table = loo_table.merge(kf, on="model", how="left")
    return LawComparison(loo_table, table, result, k, high, auto=kfold == "auto")


def check_kfold(kfold: int | str) -> int | str:
    """``kfold`` if it is "auto", 0 or a whole number >= 2, else an OptionError."""
    whole = isinstance(kfold, (int, np.integer)) and not isinstance(kfold, bool)
    if kfold != "auto" and not (whole and (kfold == 0 or int(kfold) >= 2)):
        raise errors.OptionError(
            f"kfold={kfold!r} is not 'auto', 0 (never) or a number of folds >= 2",
            param="kfold",
        )
    return kfold


def _checked(posteriors, k, random_seed, draws, tune, chains, ci_prob, say) -> KFoldResult:
    """:func:`kfold` of ``posteriors`` with ``k`` folds; more folds than runs is an error
    about ``kfold``."""
    n_runs = next(iter(posteriors.values())).fit_data().n_runs
    if k > n_runs:
        raise errors.OptionError(f"kfold={k} is more folds than runs ({n_runs})", param="kfold")
    return kfold(
        posteriors,
        k=k,
        random_seed=random_seed,
        draws=draws,
        tune=tune,
        chains=chains,
        ci_prob=ci_prob,
        log=say,
    )


def _fit_settings(post: Posterior | None, *, draws, tune, chains) -> dict:
    """Keyword arguments of the refits: given values, else the posterior's own settings."""
    settings = post.settings if post else {}
    out = {}
    for key, value in (("draws", draws), ("tune", tune), ("chains", chains)):
        value = value if value is not None else settings.get(key)
        if value is not None:
            out[key] = int(value)
    for key in ("sampler", "adaptation", "target_accept"):
        if settings.get(key) is not None:
            out[key] = settings[key]
    return out


def _score_fold(
    refit: Posterior,
    table: RunTable,
    held: list[str],
    inputs,
    position: dict,
    loss_ll,
    ci_prob: float,
    seed: int | None,
    fold: int,
) -> pd.DataFrame:
    """One row per observed held-out loss: loss, posterior mean, predictive interval, lpd.

    ``loss_ll``: the refit's log-likelihood ``loss`` (chain, draw, obs) of the held-out
    observations (coords ``obs_run``, ``obs_eval_domain``).
    """
    idx = [position[r] for r in held]
    extra: dict[str, Any] = {
        key: None if getattr(inputs, key) is None else getattr(inputs, key)[idx]
        for key in ("n_params", "tokens")
    }
    pred = refit.predict(table.mixtures.loc[held], random_seed=seed, **extra)
    mean = pred.mean.mean(("chain", "draw")).transpose("mixture", "eval_domain").values
    draws = (
        pred.predictive.stack(sample=("chain", "draw"))
        .transpose("mixture", "eval_domain", "sample")
        .values
    )
    lower, upper = credible_interval(draws, ci_prob, axis=-1)
    lpd = _log_mean_density(loss_ll, "obs")
    lpd_of = dict(zip(zip(loss_ll["obs_run"].values, loss_ll["obs_eval_domain"].values), lpd))
    observed = table.select(held).losses.to_numpy(dtype=float)  # (held run, eval_domain)
    rows = []
    for i, run in enumerate(held):
        for j, dom in enumerate(table.eval_domains):
            if np.isnan(observed[i, j]):
                continue
            rows.append(
                {
                    "fold": fold,
                    "run": run,
                    "eval_domain": dom,
                    "loss": observed[i, j],
                    "mean": mean[i, j],
                    "lower": lower[i, j],
                    "upper": upper[i, j],
                    "lpd": lpd_of[(run, dom)],
                }
            )
    return pd.DataFrame(rows)


def _log_mean_density(loglik, dim: str) -> np.ndarray:
    """log mean_s exp(loglik[s]) over the (chain, draw) samples, per ``dim``: the log
    predictive density of held-out data, computed stably."""
    from scipy.special import logsumexp

    values = loglik.stack(sample=("chain", "draw")).transpose(dim, "sample").values
    return logsumexp(values, axis=-1) - np.log(values.shape[-1])


def _metrics(points: pd.DataFrame, *, by_run: bool) -> dict:
    """MAE, Spearman and coverage of pointwise rows. ``by_run``: Spearman of each run's mean
    loss over its observed domains (predicted vs observed); else over the rows themselves."""
    err = (points["loss"] - points["mean"]).abs()
    inside = (points["lower"] <= points["loss"]) & (points["loss"] <= points["upper"])
    pairs = points.groupby("run", sort=False)[["loss", "mean"]].mean() if by_run else points
    return {
        "mae": float(err.mean()),
        "spearman": _spearman(pairs["mean"], pairs["loss"]),
        "coverage": float(inside.mean()),
    }


def _spearman(x, y) -> float:
    """Spearman rank correlation; NaN with fewer than 3 pairs or a constant side."""
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
