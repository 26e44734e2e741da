"""The report's sections on whether the fit can be trusted: the diagnostics gate with the
worst parameters' trace and rank plots (1), the posterior predictive check per validation
domain (2), and the backtests stored with a target-scale posterior."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import xarray as xr

from bayesmix.posterior.data_groups import data_groups
from bayesmix.posterior.extrapolation import stored_backtest
from bayesmix.posterior.intervals import credible_interval
from bayesmix.reporting.figures import embed_figure, esc, html_table, new_figure, panel_grid
from bayesmix.reporting.view import View

#: Trace and rank plots for this many worst parameters; this many rows in the table.
TRACE_PARAMS = 4
WORST_ROWS = 10


# ------------------------------------------------------------------------------ 1. the fit
def section_fit(view: View) -> tuple[str, str, str]:
    """Law, diagnostics gate, the worst parameters' table and their trace and rank plots."""
    d = view.post.diagnostics
    status = '<span class="ok">passed</span>' if d.ok else '<span class="bad">FAILED</span>'
    gate = pd.DataFrame(
        {
            "check": [
                "chains x draws",
                "divergences",
                "max tree depth hits",
                "min E-BFMI",
                "max R-hat",
                "min bulk ESS",
                "min tail ESS",
            ],
            "value": [
                f"{d.chains} x {d.draws}",
                str(d.divergences),
                str(d.treedepth_hits),
                f"{d.min_bfmi:.3f}",
                f"{d.max_rhat:.4f} ({d.worst_rhat})",
                f"{d.min_ess_bulk:.0f} ({d.worst_ess})",
                f"{d.min_ess_tail:.0f}",
            ],
        }
    )
    parts = [f"<p>Diagnostics gate: {status}.</p>", html_table(gate)]
    if d.failed:
        parts.append("<ul>" + "".join(f"<li>{esc(f)}</li>" for f in d.failed) + "</ul>")
    worst = _worst_parameters(view.post)
    if worst is not None and len(worst):
        shown = worst.head(WORST_ROWS)[
            ["parameter", "mean", "sd", "r_hat", "ess_bulk", "ess_tail", "units"]
        ].copy()
        for col in ("ess_bulk", "ess_tail"):
            shown[col] = shown[col].map(lambda v: "–" if not np.isfinite(v) else f"{v:.0f}")
        parts.append(
            f"<p>The {len(shown)} parameters with the worst R-hat or bulk ESS "
            f"(of {len(worst)} scalar elements):</p>"
        )
        parts.append(html_table(shown, 3))
        parts.append(_trace_rank_figure(view.post, worst.head(TRACE_PARAMS)))
    return "fit", "Fit and diagnostics", "\n".join(parts)


def _worst_parameters(post) -> pd.DataFrame | None:
    """Every scalar element of the posterior's float variables with mean, sd, R-hat and ESS,
    worst first (largest R-hat and smallest bulk ESS interleaved)."""
    import arviz_stats

    ds = post.tree["posterior"].to_dataset()
    ds = ds[[v for v in ds.data_vars if ds[v].dtype.kind == "f"]]
    chains = ds.sizes.get("chain", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rhat = arviz_stats.rhat(ds) if chains > 1 else None
        bulk = arviz_stats.ess(ds, method="bulk")
        tail = arviz_stats.ess(ds, method="tail")
    rows = []
    for name, da in ds.data_vars.items():
        other = [x for x in da.dims if x not in ("chain", "draw")]
        values = da.transpose("chain", "draw", *other).values
        flat = values.reshape(values.shape[:2] + (-1,))
        labels = (
            [""]
            if not other
            else [
                "["
                + ", ".join(
                    str(da[dim].values[i]) if dim in da.coords else str(i)
                    for dim, i in zip(other, idx)
                )
                + "]"
                for idx in np.ndindex(*[da.sizes[x] for x in other])
            ]
        )
        r = (
            np.full(flat.shape[-1], np.nan)
            if rhat is None
            else np.asarray(rhat[name].transpose(*other).values, float).reshape(-1)
        )
        b = np.asarray(bulk[name].transpose(*other).values, float).reshape(-1)
        t = np.asarray(tail[name].transpose(*other).values, float).reshape(-1)
        for i, lab in enumerate(labels):
            rows.append(
                {
                    "parameter": name + lab,
                    "variable": name,
                    "index": i,
                    "mean": float(np.mean(flat[..., i])),
                    "sd": float(np.std(flat[..., i])),
                    "r_hat": r[i],
                    "ess_bulk": b[i],
                    "ess_tail": t[i],
                    "units": da.attrs.get("units", ""),
                }
            )
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    by_rhat = frame.sort_values("r_hat", ascending=False, na_position="last").index.tolist()
    by_ess = frame.sort_values("ess_bulk", ascending=True, na_position="last").index.tolist()
    order = list(dict.fromkeys(x for pair in zip(by_rhat, by_ess) for x in pair))
    return frame.loc[order].reset_index(drop=True)


def _trace_rank_figure(post, worst: pd.DataFrame) -> str:
    """Trace (left) and rank (right) plots of the ``worst`` scalar parameters, one row each,
    drawn by arviz-plots (``plot_trace`` and ``plot_rank`` side by side)."""
    import arviz_plots
    import matplotlib.pyplot as plt

    ds = post.tree["posterior"]
    scalars = {}
    for _, w in worst.iterrows():
        da = ds[w["variable"]]
        other = [x for x in da.dims if x not in ("chain", "draw")]
        values = da.transpose("chain", "draw", *other).values
        scalars[w["parameter"]] = (
            ("chain", "draw"),
            values.reshape(values.shape[:2] + (-1,))[..., int(w["index"])],
        )
    chains, draws = next(iter(scalars.values()))[1].shape
    data = xr.Dataset(scalars, coords={"chain": np.arange(chains), "draw": np.arange(draws)})
    pc = arviz_plots.combine_plots(
        xr.DataTree.from_dict({"posterior": data}),
        plots=[(arviz_plots.plot_trace, {}), (arviz_plots.plot_rank, {})],
        plot_names=["trace", "rank"],
        backend="matplotlib",
        aes={"color": ["chain"], "overlay": ["chain"]},
        figure_kwargs={"figsize": (10, 1.9 * len(worst) + 0.4), "layout": "constrained"},
    )
    fig = pc.viz["figure"].item()
    for _, w in worst.iterrows():
        ax_t, ax_r = (
            pc.viz["plot"][w["parameter"]].sel(column=c).item() for c in ("trace", "rank")
        )
        ax_t.set_title(
            f"{w['parameter']}: trace (R-hat {w['r_hat']:.3f}, bulk ESS {w['ess_bulk']:.0f})",
            fontsize=9,
        )
        ax_r.set_title(f"{w['parameter']}: rank ECDF difference (flat = well mixed)", fontsize=9)
        # combine_plots places plot_rank's p-value text and y-range at the largest rank
        # deviation of all rows: each row is rescaled to its own lines, the text put in its corner
        for text in ax_r.texts:
            text.set_transform(ax_r.transAxes)
            text.set_position((0.01, 0.95))
            text.set_verticalalignment("top")
            text.set_fontsize(7)
        ax_r.relim()
        ax_r.autoscale_view()
        for ax in (ax_t, ax_r):
            ax.tick_params(labelsize=7)
    html = embed_figure(
        fig,
        "trace-rank",
        "Trace (left) and rank plots per chain (right) of the worst parameters: the "
        "difference between each chain's ECDF of its draws' ranks over all chains and the "
        "uniform one; black points are where a chain departs from uniform (the p-value tests "
        "that the chains mix).",
    )
    plt.close(fig)  # arviz-plots draws through pyplot: free its figure once embedded
    return html


# ------------------------------------------------------------------------------ 2. PPC
def ppc_arrays(post):
    """(observed DataArray (run, eval_domain), predictive DataArray (chain, draw, run,
    eval_domain)): the stored groups, or computed for files written before them."""
    tree = post.tree
    if "posterior_predictive" in tree.children and "observed_data" in tree.children:
        obs = tree["observed_data"]["loss"]
        pred = tree["posterior_predictive"]["loss"]
        if obs.dims == ("run", "eval_domain"):
            return obs, pred
    groups = data_groups(
        tree["posterior"].to_dataset(),
        post.law,
        post.spec.likelihood,
        post.fit_data(),
        random_seed=0,
    )
    return groups["observed_data"]["loss"], groups["posterior_predictive"]["loss"]


def section_ppc(view: View) -> tuple[str, str, str]:
    """Each fitted run's measured loss against its replicate's interval, per validation
    domain, with the coverage table."""
    obs, pred = ppc_arrays(view.post)
    stacked = pred.stack(sample=("chain", "draw")).transpose("sample", "run", "eval_domain")
    lo, hi = credible_interval(stacked.values, view.prob, ci_kind=view.ci_kind)  # (run, K)
    med = np.quantile(stacked.values, 0.5, axis=0)
    y = obs.transpose("run", "eval_domain").values
    domains = [str(d) for d in obs["eval_domain"].values]
    k = len(domains)
    rows, cols = panel_grid(k, 6)
    fig = new_figure(2.5 * cols + 0.5, 2.3 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False)
    table = []
    for i, dom in enumerate(domains):
        ax = axes.flat[i]
        ok = np.isfinite(y[:, i])
        yi, mi, li, hi_ = y[ok, i], med[ok, i], lo[ok, i], hi[ok, i]
        covered = float(np.mean((li <= yi) & (yi <= hi_))) if ok.any() else float("nan")
        ax.errorbar(
            yi, mi, yerr=[mi - li, hi_ - mi], fmt="o", ms=2.5, lw=0.6, alpha=0.6, color="tab:blue"
        )
        if ok.any():
            ends = [min(yi.min(), li.min()), max(yi.max(), hi_.max())]
            ax.plot(ends, ends, color="k", lw=0.8, ls="--")
        ax.set_title(f"{dom}: {covered:.0%} covered", fontsize=8)
        ax.tick_params(labelsize=6)
        table.append(
            {
                "eval_domain": dom,
                "runs": int(ok.sum()),
                f"coverage of {view.prob:.0%} interval": covered,
                "mean |observed - median|": float(np.mean(np.abs(yi - mi)))
                if ok.any()
                else float("nan"),
            }
        )
    for ax in axes.flat[k:]:
        ax.set_visible(False)
    fig.supxlabel("observed loss (nats per token)", fontsize=9)
    fig.supylabel("replicated loss: median and interval", fontsize=9)
    fig_html = embed_figure(
        fig,
        "ppc",
        f"Posterior predictive check: each fitted run's measured loss (x) "
        f"against the {view.prob:.0%} interval of its replicate under the "
        "posterior (y), per validation domain; points near the dashed line and "
        f"about {view.prob:.0%} of intervals crossing it mean the law and the "
        "noise model describe the runs.",
    )
    text = (
        "<p>Replicates come from the file's <code>posterior_predictive</code> group (or "
        "are drawn now for older files): the law's mean plus the fitted noise.</p>"
    )
    return "ppc", "Posterior predictive check", text + fig_html + html_table(pd.DataFrame(table), 3)


# ------------------------------------------------------------------------------ backtests
def section_backtest(view: View) -> tuple[str, str, str] | None:
    """The backtests stored with a target-scale posterior (:mod:`bayesmix.scaling.backtesting`):
    verdict, summary by split and a plot of the held-out errors against the distance."""
    bt = stored_backtest(view.post)
    if bt is None:
        return None
    order = ["split", "n", "size_ratio", "token_ratio", "distance", "coverage"]
    order += ["calibrated_coverage", "bias", "mae", "width"]
    summary = pd.DataFrame(bt["summary"])
    summary = summary[[c for c in order if c in summary.columns]]
    parts = [f"<p>{esc(bt['verdict'])}</p>", html_table(summary, 3)]
    cal = view.post.extrapolation
    if cal is not None:
        parts.append(f"<p>{esc(cal.describe())}.</p>")
    target = bt.get("target")
    if target:
        parts.append(
            f"<p>This posterior's target lies at log-distance {target['distance']:.2f} beyond "
            f"the proxies (size {target.get('size_distance', 0.0):.2f}, tokens "
            f"{target.get('token_distance', 0.0):.2f}): the learned extrapolation error is "
            f"{100 * target['extrapolation_share']:.0f}% of its predictive variance.</p>"
        )
    if bt.get("notes"):
        parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in bt["notes"]) + "</ul>")
    rec = pd.DataFrame(bt.get("records") or {})
    if len(rec):
        parts.append(_backtest_figure(rec, cal))
    return "backtest", "Backtests: extrapolation within the proxies", "\n".join(parts)


def _backtest_figure(rec: pd.DataFrame, cal) -> str:
    """Held-out errors against their distance (jittered), with the 90% band of the learned
    error (median own sd of the records) when the posterior has one."""
    fig = new_figure(6.5, 3.2)
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    for name, g in rec.groupby("split", sort=False):
        x = g["distance"].to_numpy(float) + rng.uniform(-0.04, 0.04, len(g))
        ax.plot(x, g["error"].to_numpy(float), "o", ms=2, alpha=0.35, label=str(name))
    if cal is not None:
        u = np.linspace(0.0, max(float(rec["distance"].max()), 0.1) * 1.15, 50)
        s = float(np.median(rec["sd"]))
        k2 = float(np.mean(cal.kappa**2))
        axes = ["size"] if cal.learned_axes == ["joint"] else list(cal.learned_axes)
        for axis, color in zip(axes, ("grey", "tab:olive"), strict=False):
            t2 = float(np.mean(getattr(cal, f"tau_{axis}") ** 2 + cal.tau_mix**2))
            half = 1.645 * np.sqrt(k2 * s**2 + t2 * u**2)
            label = "learned 90% band" + ("" if len(axes) == 1 else f" ({axis})")
            ax.fill_between(u, -half, half, color=color, alpha=0.2, label=label)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xlabel("log-distance beyond the fitted size / tokens")
    ax.set_ylabel("observed - predicted (nats)")
    ax.legend(fontsize=8)
    return embed_figure(
        fig,
        "backtest",
        "Held-out proxy losses: error against distance, by split, with the 90% band of the "
        "learned error (median own spread)",
    )


__all__ = [
    "TRACE_PARAMS",
    "WORST_ROWS",
    "ppc_arrays",
    "section_backtest",
    "section_fit",
    "section_ppc",
]
