"""Continual pre-training: the critical share of a new domain.

A trained checkpoint continues training on a mixture of its original data and a new domain. The
more of the new domain, the more the original domain's loss rises. The *critical share* is the
largest share x of the new domain at which the original domain's loss after continued training
stays at or below its value at the start (the step-0 checkpoint), or at most ``tolerance`` nats
above it. Ye et al. (Data Mixing Laws, continual pre-training of a 70M Pythia checkpoint on Pile
+ Python) observed a critical Pile share of about 0.29, i.e. a Python share of about 0.71.

:func:`critical_share` computes x for every posterior draw from the posterior's own mixing law
(any law: :meth:`bayesmix.laws.Law.predict` on :meth:`Posterior.law_params` draws), along the
line from all-original (x = 0) to all-new, other training domains held fixed. The loss is the
law's expected loss (no run-to-run noise): the question is where the law crosses the start.

The start loss is not in a posterior: ``bayesmix fit`` keeps one record per run (the fitted
checkpoint). It comes from the run table with the step-0 records (``runs=``), or is given as a
number (``start_loss=``); :mod:`bayesmix.decisions.continual_inputs` reads it and the other
inputs.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from bayesmix import errors
from bayesmix.data.table import RunTable
from bayesmix.decisions.continual_inputs import (
    ContinualProblem,
    continual_problem,
    law_inputs,
    original_loss_weights,
    original_start,
    share_line,
)
from bayesmix.io import atomic_path
from bayesmix.posterior.intervals import credible_interval

#: Points of the grid over [0, x_max] on which every draw's curve is evaluated first; the last
#: crossing found on it is then refined by bisection (a crossing between two grid points
#: 0.005 apart; a curve that dips below and back within one grid step is not resolved).
GRID_POINTS = 201
#: Bisection steps from the grid interval: 0.005 / 2^40, far below any posterior spread.
BISECT_STEPS = 40
#: Draws evaluated at once on the grid (bounds memory: chunk x grid x validation domains).
CHUNK = 256
UNITS = "share of training tokens"
PLOT_SUFFIXES = (".png", ".pdf", ".svg")


@dataclass
class CriticalShare:
    """The critical share of ``new`` for every posterior draw, and its summaries.

    * ``draws``: DataArray (chain, draw), the critical share of the new domain (a fraction of
      training tokens); ``original_draws``: the matching share of the original training domain
      (``1 - x - sum(other_shares)``).
    * ``curve``: DataArray (chain, draw, new_share), the original domain's expected loss along
      the line (nats per token); ``observed``: the fitted runs (run, new_share, loss, on_line).
    * ``n_at_max``: draws whose loss is within ``start_loss + tolerance`` even at the largest
      new share ``x_max`` (critical share = x_max, 1 with two domains); ``n_at_zero``: draws
      above it at every share (critical share 0 by convention).
    """

    draws: xr.DataArray
    original_draws: xr.DataArray
    curve: xr.DataArray
    observed: pd.DataFrame
    original: str
    new: str
    loss_name: str
    loss_label: str
    start_loss: float
    start_source: str
    tolerance: float
    prob: float
    n_at_max: int
    n_at_zero: int
    x_max: float
    law: str
    other_shares: dict = field(default_factory=dict)
    fit_step: float | None = None
    diagnostics_warning: str | None = None
    source: str | None = None

    # ---------------------------------------------------------------------- summaries
    @property
    def n_draws(self) -> int:
        return int(self.draws.size)

    @property
    def mean(self) -> float:
        return float(self.draws.mean())

    @property
    def median(self) -> float:
        return float(self.draws.median())

    @property
    def interval(self) -> tuple[float, float]:
        """Equal-tailed interval of the new domain's critical share with mass ``prob``."""
        return _interval(self.draws, self.prob)

    @property
    def original_mean(self) -> float:
        return float(self.original_draws.mean())

    @property
    def original_median(self) -> float:
        return float(self.original_draws.median())

    @property
    def original_interval(self) -> tuple[float, float]:
        """Equal-tailed interval of the original domain's share at the critical point."""
        return _interval(self.original_draws, self.prob)

    @property
    def rhat(self) -> float:
        """R-hat of the critical-share draws themselves (NaN with one chain or constant draws):
        a derived quantity can mix well when a hyperparameter fails the diagnostics gate."""
        return _convergence(self.draws, "rhat")

    @property
    def ess_bulk(self) -> float:
        """Bulk effective sample size of the critical-share draws (NaN for constant draws)."""
        return _convergence(self.draws, "ess")

    @property
    def observed_range(self) -> tuple[float, float] | None:
        """Smallest and largest new-domain share among the fitted runs on the line."""
        on = self.observed[self.observed["on_line"]]
        if on.empty:
            return None
        return float(on["new_share"].min()), float(on["new_share"].max())

    def to_frame(self) -> pd.DataFrame:
        """Tidy table, one row per training domain (role ``new``, then ``original``): shares
        as fractions of training tokens, the start loss and tolerance in nats per token."""
        rows = []
        for role, dom, da in (
            ("new", self.new, self.draws),
            ("original", self.original, self.original_draws),
        ):
            lo, hi = _interval(da, self.prob)
            rows.append(
                {
                    "quantity": "critical_share",
                    "role": role,
                    "train_domain": dom,
                    "mean": float(da.mean()),
                    "median": float(da.median()),
                    "lower": lo,
                    "upper": hi,
                    "prob": self.prob,
                    "original_loss": self.loss_label,
                    "start_loss": self.start_loss,
                    "tolerance": self.tolerance,
                    "n_draws": self.n_draws,
                    "n_at_max": self.n_at_max,
                    "n_at_zero": self.n_at_zero,
                    "rhat": _convergence(da, "rhat"),
                    "ess_bulk": _convergence(da, "ess"),
                    "fit_step": self.fit_step,
                    "law": self.law,
                    "diagnostics_ok": self.diagnostics_warning is None,
                }
            )
        return pd.DataFrame(rows)

    def __str__(self) -> str:
        return self.to_text()

    def to_text(self, warning: bool = True) -> str:
        """One paragraph: the critical share, its interval, what it means, boundary draws; the
        failed-diagnostics warning first and loud (``warning=False`` leaves it out, e.g. when
        the CLI prints it on stderr)."""
        pct = f"{self.prob:.0%}"
        lo, hi = self.interval
        olo, ohi = self.original_interval
        step = f" after step {self.fit_step:g}" if self.fit_step is not None else ""
        limit = "at or below" if self.tolerance == 0 else f"at most {self.tolerance:g} nats above"
        text = (
            f"Critical share of {self.new}{step}: median {self.median:.3f}, mean "
            f"{self.mean:.3f}, {pct} interval [{lo:.3f}, {hi:.3f}] (share of training "
            f"tokens); the matching {self.original} share is {self.original_median:.3f} "
            f"[{olo:.3f}, {ohi:.3f}]. It is the largest {self.new} share at which the law's "
            f"expected loss of {self.loss_label} stays {limit} its start {self.start_loss:.4f} "
            f"nats per token ({self.start_source}), computed for each of {self.n_draws} "
            f"draws of the {self.law} law"
        )
        if self.other_shares:
            text += ", other domains held at " + ", ".join(
                f"{d}={s:g}" for d, s in self.other_shares.items()
            )
        text += (
            f". {self.n_at_max} draw(s) are within the limit even at {self.new} share "
            f"{self.x_max:g} (critical share {self.x_max:g}), {self.n_at_zero} exceed it "
            f"at every share (critical share 0)."
        )
        if np.isfinite(self.rhat) or np.isfinite(self.ess_bulk):
            text += (
                f" Convergence of the critical share itself: R-hat {self.rhat:.3f}, bulk "
                f"ESS {self.ess_bulk:.0f}."
            )
        rng = self.observed_range
        if rng is not None:
            text += f" The fitted runs span {self.new} shares {rng[0]:.3f}-{rng[1]:.3f}"
            text += (
                "; outside that range the law extrapolates."
                if not rng[0] <= self.median <= rng[1]
                else "."
            )
        if warning and self.diagnostics_warning:
            bar = "!" * 78
            text = "\n".join(
                [
                    bar,
                    f"WARNING: {self.diagnostics_warning}",
                    "The critical share below may be wrong; refit (more draws, more "
                    "tuning, or a better model) before relying on it.",
                    bar,
                    text,
                ]
            )
        return text

    # ---------------------------------------------------------------------- plot
    def plot(self, path: str | Path) -> Path:
        """Original-domain loss against the new domain's share: posterior mean and ``prob``
        band, the start loss (and start + tolerance), the fitted runs' losses, the critical
        share's interval shaded. PNG, PDF or SVG by extension, written atomically."""
        from matplotlib.figure import Figure

        path = Path(path)
        if path.suffix.lower() not in PLOT_SUFFIXES:
            raise errors.OptionError(
                f"{path}: unknown figure format {path.suffix!r}",
                hint=f"use a file ending in {' or '.join(PLOT_SUFFIXES)}",
            )
        x = self.curve["new_share"].values
        flat = self.curve.stack(sample=("chain", "draw")).transpose("new_share", "sample").values
        lo, hi = credible_interval(flat, self.prob, axis=1)
        fig = Figure(figsize=(6.4, 4.4))
        ax = fig.add_subplot()
        clo, chi = self.interval
        ax.axvspan(
            clo,
            chi,
            color="tab:orange",
            alpha=0.2,
            label=f"critical share, {self.prob:.0%} interval",
        )
        ax.axvline(self.median, color="tab:orange", lw=1, label="critical share, median")
        ax.fill_between(
            x,
            lo,
            hi,
            color="tab:blue",
            alpha=0.25,
            label=f"{self.prob:.0%} band of the expected loss",
        )
        ax.plot(x, flat.mean(axis=1), color="tab:blue", label="posterior mean")
        ax.axhline(self.start_loss, color="black", ls="--", lw=1, label="start (step 0)")
        if self.tolerance > 0:
            ax.axhline(
                self.start_loss + self.tolerance,
                color="black",
                ls=":",
                lw=1,
                label=f"start + {self.tolerance:g}",
            )
        on = self.observed[self.observed["on_line"]]
        if not on.empty:
            step = f" (step {self.fit_step:g})" if self.fit_step is not None else ""
            ax.scatter(
                on["new_share"],
                on["loss"],
                color="black",
                zorder=3,
                s=18,
                label=f"fitted runs{step}",
            )
        ax.set_xlabel(f"share of {self.new} (fraction of training tokens)")
        ax.set_ylabel(f"{self.loss_name} loss (nats per token)")
        ax.set_xlim(0, self.x_max)
        ax.set_title(
            f"Critical share of {self.new}: {self.median:.3f} [{clo:.3f}, {chi:.3f}]", fontsize=10
        )
        ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        with atomic_path(path, suffix=True) as tmp:  # the one atomic writer (WriteError)
            fig.savefig(tmp)
        return path


def _convergence(da: xr.DataArray, which: str) -> float:
    """R-hat or bulk ESS of draws (chain, draw) by arviz-stats; NaN where undefined."""
    import arviz_stats

    values = da.values
    if np.ptp(values) == 0 or (which == "rhat" and da.sizes["chain"] < 2):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = arviz_stats.rhat(da) if which == "rhat" else arviz_stats.ess(da, method="bulk")
    return float(out)


def _interval(da: xr.DataArray, prob: float) -> tuple[float, float]:
    lo, hi = credible_interval(da.values.ravel(), prob)
    return float(lo), float(hi)


# ------------------------------------------------------------------------------ the computation
def critical_share(
    posterior,
    problem: ContinualProblem | None = None,
    *,
    original: str | None = None,
    new: str | None = None,
    start_loss: float | None = None,
    runs: RunTable | None = None,
    weights=None,
    tolerance: float | None = None,
    prob: float | None = None,
    other_shares: Mapping[str, float] | None = None,
) -> CriticalShare:
    """The critical share of the problem's new domain per posterior draw (see the module
    docstring).

    ``critical_share(posterior, problem)`` with a
    :class:`~bayesmix.decisions.continual_inputs.ContinualProblem`, or its fields as keywords
    (``original``, ``new``, ``start_loss`` or ``runs``, ``weights``, ``tolerance`` (default 0),
    ``prob`` (default 0.9), ``other_shares``; documented there). The new share runs over
    [0, 1 - sum of the other shares]. Returns a :class:`CriticalShare`.
    """
    problem = continual_problem(problem, locals())
    new = str(problem.new)
    train = list(posterior.train_domains)
    w, giver, name, label = original_loss_weights(
        posterior, str(problem.original), new, problem.weights
    )
    base, direction, x_max = share_line(train, giver, new, problem.other_shares)
    start, start_source = original_start(posterior, problem, w)
    law = posterior.law
    extra = law_inputs(posterior)
    params = posterior.law_params(flat=True)
    params = {k: v for k, v in params.items() if k in law.param_names}

    def loss(r, idx):
        """Original loss (len(idx), n) at mixtures r ((n, M) or (len(idx), n, M))."""
        sub = {k: v[idx] for k, v in params.items()}
        return law.predict(r, sub, **extra) @ w

    n = next(iter(params.values())).shape[0]
    cross = _crossings(loss, n, base, direction, x_max, start + float(problem.tolerance))
    share_da, orig_da, curve_da = _draw_arrays(posterior, cross, x_max, new, giver, label)
    fit = posterior.fit_data()
    steps = fit.column("step")
    return CriticalShare(
        draws=share_da,
        original_draws=orig_da,
        curve=curve_da,
        observed=_observed(fit, train, w, giver, new, base),
        original=giver,
        new=new,
        loss_name=name,
        loss_label=label,
        start_loss=start,
        start_source=start_source,
        tolerance=float(problem.tolerance),
        prob=problem.prob,
        n_at_max=int(cross.at_max.sum()),
        n_at_zero=int(cross.at_zero.sum()),
        x_max=x_max,
        law=law.name,
        other_shares={d: float(s) for d, s in (problem.other_shares or {}).items()},
        fit_step=float(steps.max()) if steps is not None else None,
        diagnostics_warning=posterior.diagnostics_warning,
        source=fit.source,
    )


@dataclass
class _Crossings:
    """Every draw's critical share ``x`` (S,), its loss ``curve`` (S, G) on the ``grid`` (G,) of
    new shares, and which draws stay within the limit at the largest share (``at_max``) or
    exceed it at every share (``at_zero``)."""

    x: np.ndarray
    curve: np.ndarray
    grid: np.ndarray
    at_max: np.ndarray
    at_zero: np.ndarray


def _crossings(loss, n: int, base, direction, x_max: float, limit: float) -> _Crossings:
    """Where each of ``n`` draws' original loss ``loss(r, idx)`` last stays within ``limit``
    along ``r(x) = base + x direction``: on a grid of :data:`GRID_POINTS` (in blocks of
    :data:`CHUNK` draws), then :data:`BISECT_STEPS` bisection steps."""
    giver = int(np.argmin(direction))
    grid = np.linspace(0.0, x_max, GRID_POINTS)
    r_grid = base[None, :] + grid[:, None] * direction[None, :]
    r_grid[:, giver] = np.clip(r_grid[:, giver], 0.0, None)
    curve = np.concatenate(
        [loss(r_grid, np.arange(i, min(i + CHUNK, n))) for i in range(0, n, CHUNK)]
    )  # (S, G)
    ok = curve <= limit
    at_max = ok[:, -1]
    at_zero = ~ok.any(axis=1)
    last = GRID_POINTS - 1 - np.argmax(ok[:, ::-1], axis=1)  # last feasible grid index
    x = np.where(at_max, x_max, 0.0)
    todo = np.flatnonzero(~at_max & ~at_zero)
    if todo.size:
        lo, hi = grid[last[todo]], grid[last[todo] + 1]  # lo feasible, hi not
        for _ in range(BISECT_STEPS):
            mid = 0.5 * (lo + hi)
            r_mid = base[None, None, :] + mid[:, None, None] * direction[None, None, :]
            good = loss(np.clip(r_mid, 0.0, None), todo)[:, 0] <= limit
            lo, hi = np.where(good, mid, lo), np.where(good, hi, mid)
        x[todo] = lo
    return _Crossings(x, curve, grid, at_max, at_zero)


def _draw_arrays(posterior, cross: _Crossings, x_max: float, new: str, giver: str, label: str):
    """The critical shares of the new and the original domain (chain, draw) and the loss
    curves (chain, draw, new_share) as DataArrays with units."""
    post = posterior.tree["posterior"]
    chains, draws = post["chain"].values, post["draw"].values
    shape = (len(chains), len(draws))
    sample = {"chain": chains, "draw": draws}
    share_da = xr.DataArray(
        cross.x.reshape(shape),
        sample,
        ("chain", "draw"),
        name="critical_share",
        attrs={"units": UNITS, "train_domain": new},
    )
    orig_da = xr.DataArray(
        (x_max - cross.x).reshape(shape),
        sample,
        ("chain", "draw"),
        name="critical_original_share",
        attrs={"units": UNITS, "train_domain": giver},
    )
    curve_da = xr.DataArray(
        cross.curve.reshape(shape + (GRID_POINTS,)),
        {**sample, "new_share": cross.grid},
        ("chain", "draw", "new_share"),
        name="original_loss",
        attrs={"units": "nats per token", "original_loss": label},
    )
    return share_da, orig_da, curve_da


def _observed(fit: RunTable, train, w, giver, new, base) -> pd.DataFrame:
    """The fitted runs' original loss (NaN when a weighted domain is missing) and whether each
    run lies on the line (the fixed domains at their fixed shares, within 1e-6)."""
    fit = fit.final()
    mix = fit.mixtures
    losses = fit.losses.to_numpy(dtype=float)
    used = w > 0
    loss = losses[:, used] @ w[used]
    fixed = [j for j, d in enumerate(train) if d not in (giver, new)]
    on = np.all(np.abs(mix.to_numpy(dtype=float)[:, fixed] - base[fixed]) <= 1e-6, axis=1)
    return pd.DataFrame(
        {
            "run": list(mix.index),
            "new_share": mix[new].to_numpy(dtype=float),
            "loss": loss,
            "on_line": on,
        }
    )
