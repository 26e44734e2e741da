"""One self-contained HTML report of a posterior, optionally with a decision and a ledger.

:func:`build_html` returns the page as text; :func:`write_report` checks the output path and
writes it atomically (``bayesmix report``, :meth:`Posterior.report` and
:meth:`DecisionReport.to_html` call these). Every figure is a PNG drawn with matplotlib (its
object API, no pyplot state, no display needed) and embedded as base64, so the file opens
anywhere without network access. Sections:

1. the fit: law, domains, draws, the diagnostics gate, the parameters with the worst R-hat and
   ESS, with trace and rank plots of the worst few;
2. posterior predictive check: each run's measured loss against its replicated measurement
   (median and interval), one small panel per validation domain;
3. the slope matrix (``t``, or the law's other validation x training matrix) as a heatmap of
   posterior means, annotated with P(t < 0) (or the sd) while the cells are large enough;
4. the loss along lines through the simplex: from the recommended mixture towards each
   training domain's vertex (and away from it to share 0), with intervals; and a ternary slice
   through three chosen training domains with the recommendation, the fitted runs and the
   per-draw optima marked;
5. the decision report with the spread of the optimum (when a decision is given);
6. the loop's progress per round (when a ledger is given): best observed loss, the
   recommendation of each round's posterior and its interval.

Figures scale with the number of domains (small multiples wrap, heatmap cells shrink,
annotations are dropped when cells get small), so 17 x 13 and 64 training domains stay
readable.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmix import __version__, errors
from bayesmix._compat import CI_PROB, renamed_kwargs
from bayesmix.data.constraints import Constraints
from bayesmix.data.table import check_known_domains
from bayesmix.decisions.decision import DecisionReport
from bayesmix.decisions.draws import LawDraws
from bayesmix.decisions.inputs import REPORT_FORMAT, resolve_weights
from bayesmix.decisions.optimize import minimize_objective, optima_dataarray
from bayesmix.decisions.scale import proxy_scale
from bayesmix.io import atomic_write_text, check_output_path
from bayesmix.loop.ledger import Ledger
from bayesmix.posterior.extrapolation import stored_backtest
from bayesmix.posterior.groups import data_groups
from bayesmix.posterior.intervals import check_ci_kind, check_prob, credible_interval
from bayesmix.posterior.posterior import Posterior

#: At most this many posterior draws enter the curves and the ternary view (thinned evenly).
CURVE_DRAWS = 400
#: Trace and rank plots for this many worst parameters; this many rows in the table.
TRACE_PARAMS = 4
WORST_ROWS = 10
#: Heatmap annotations: both numbers up to this many cells, one number up to the second.
ANNOTATE_TWO, ANNOTATE_ONE = 150, 400
DPI = 90


# ------------------------------------------------------------------------------ entry points
@renamed_kwargs(**CI_PROB)
def write_report(
    path: str | Path | None,
    posterior,
    *,
    decision=None,
    ledger=None,
    ternary=None,
    ci_prob: float = 0.9,
    ci_kind: str = "eti",
    title: str | None = None,
    force: bool = False,
    inputs: Iterable = (),
    option: str = "-o",
) -> Path | str:
    """Write the self-contained HTML report of a posterior [+ decision, ledger], atomically.

    One HTML file (figures embedded, no network needed): the diagnostics gate with trace/rank
    plots of the worst parameters, a posterior predictive check per validation domain, the
    slope heatmap, the loss along lines through the simplex and a ternary slice, the decision
    with the spread of the optimum, and the loop's progress per round.

    Parameters
    ----------
    path : str or path, or None
        The ``.html`` file to write (None: return the page as text, write nothing). Refused
        before any work (:class:`~bayesmix.errors.OutputPathError`) when it is one of ``inputs``
        (the posterior, decision and ledger files are always added), or exists without
        ``force``.
    posterior : Posterior or path
        A fitted posterior or its NetCDF file.
    decision : DecisionReport or path, optional
        A decision (or its JSON file) for the decision section; without one the simplex
        views start from the posterior-mean optimum with equal weights, no constraints.
    ledger : path, optional
        An experiment ledger for the progress section.
    ternary : sequence of str or str, optional
        Three training domains (list or ``"a,b,c"``; default the three largest shares of the
        recommendation).
    ci_prob : float, default 0.9
        Mass of the intervals (``prob`` is its deprecated name).
    ci_kind : {"eti", "hdi"}, default "eti"
        Equal-tailed or highest density intervals.
    title : str, optional
        The page title.
    force : bool, default False
        Replace an existing file.
    inputs : iterable of paths, optional
        More input files the output must not overwrite.
    option : str, default "-o"
        The option name used in error messages.

    Returns
    -------
    pathlib.Path or str
        The file written, or the page as text when ``path`` is None.

    Examples
    --------
    >>> import bayesmix as bm
    >>> post = bm.Posterior.load("posterior.nc")                 # doctest: +SKIP
    >>> rec = bm.decide(post)                                    # doctest: +SKIP
    >>> bm.report("report.html", post, decision=rec)             # doctest: +SKIP
    PosixPath('report.html')
    """
    if path is None:
        return build_html(
            posterior,
            decision=decision,
            ledger=ledger,
            ternary=ternary,
            ci_prob=ci_prob,
            ci_kind=ci_kind,
            title=title,
        )
    sources = [
        *inputs,
        getattr(posterior, "source", None),
        ledger,
        decision if isinstance(decision, (str, Path)) else None,
    ]
    out = check_output_path(
        path, inputs=sources, force=force, option=option, suffixes=(".html", ".htm")
    )
    text = build_html(
        posterior,
        decision=decision,
        ledger=ledger,
        ternary=ternary,
        ci_prob=ci_prob,
        ci_kind=ci_kind,
        title=title,
    )
    return atomic_write_text(out, text)


@renamed_kwargs(**CI_PROB)
def build_html(
    posterior,
    *,
    decision=None,
    ledger=None,
    ternary=None,
    ci_prob: float = 0.9,
    ci_kind: str = "eti",
    title: str | None = None,
) -> str:
    """The report as one HTML document (text); arguments as :func:`write_report`."""
    check_prob(ci_prob)
    check_ci_kind(ci_kind)
    post = posterior if isinstance(posterior, Posterior) else Posterior.load(posterior)
    if isinstance(decision, (str, Path)):
        decision = load_decision(decision)
    if decision is not None:
        _check_same_domains(decision, post)
    view = _View(post, decision, ci_prob, ci_kind)
    abc = _ternary_domains(ternary, view)

    sections = [
        _section_fit(view),
        _section_ppc(view),
        _section_heatmap(view),
        _section_simplex(view, abc),
    ]
    backtest = _section_backtest(view)
    if backtest is not None:
        sections.append(backtest)
    if decision is not None:
        sections.append(_section_decision(view))
    if ledger is not None:
        sections.append(_section_ledger(view, ledger))
    name = title or f"bayesmix report: {post.source or 'posterior'}"
    return _page(name, view, sections)


def load_decision(path):
    """A :class:`~bayesmix.decisions.decision.DecisionReport` from a JSON file written by
    ``bayesmix optimize -o FILE.json`` (:meth:`DecisionReport.save`)."""
    import xarray as xr

    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise errors.UnreadableFileError("file not found", source=str(path)) from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise errors.UnreadableFileError(
            f"not JSON ({type(err).__name__})", source=str(path)
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != REPORT_FORMAT:
        raise errors.FormatError(
            f"not a bayesmix decision report (format {REPORT_FORMAT})",
            source=str(path),
            hint="write one with 'bayesmix optimize POSTERIOR -o FILE.json'",
        )
    try:
        optima = None
        if obj.get("draw_optima"):
            d = obj["draw_optima"]
            optima = optima_dataarray(np.asarray(d["shares"], float), d["train_domains"])
        spread = obj.get("optimum_spread")
        return DecisionReport(
            recommendation=pd.DataFrame(obj["recommendation"]),
            losses=pd.DataFrame(obj["losses"]),
            comparison=pd.DataFrame(obj["comparison"]),
            optimum_spread=None if spread is None else pd.DataFrame(spread),
            draw_optima=optima if isinstance(optima, xr.DataArray) else None,
            p_beats_baseline=float(obj["p_beats_baseline"]),
            objective=obj["objective"],
            objective_description=obj["objective_description"],
            objective_value=float(obj["objective_value"]),
            weights_description=obj["weights"],
            baseline_label=obj["baseline"],
            prob=float(obj["prob"]),
            ci_kind=obj.get("ci_kind") or "eti",
            n_samples=int(obj["n_samples"]),
            constraints=Constraints.from_dict(obj["constraints"]),
            diagnostics_warning=obj.get("diagnostics_warning"),
            source=obj.get("source"),
            notes=list(obj.get("notes") or []),
            law=obj.get("law") or "",
            optimizer_status=obj.get("optimizer_status") or "",
            inputs=dict(obj.get("inputs") or {}),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise errors.FormatError(
            f"damaged decision report ({type(err).__name__}: {err})", source=str(path)
        ) from None


def _check_same_domains(decision, post) -> None:
    got = [str(d) for d in decision.recommendation["train_domain"]]
    if got != list(post.train_domains):
        raise errors.DomainNameError(
            "the decision's training domains differ from the posterior's",
            source=decision.source,
            hint=f"posterior: {', '.join(post.train_domains)}",
        )


# ------------------------------------------------------------------------------ shared state
class _View:
    """What several sections share: the posterior, thinned law draws, weights, the
    recommended mixture and the constraints."""

    def __init__(self, post, decision, ci_prob: float, ci_kind: str = "eti"):
        self.post, self.decision, self.prob, self.ci_kind = post, decision, ci_prob, ci_kind
        self.train = list(post.train_domains)
        self.eval = list(post.eval_domains)
        inputs = {}
        if decision is not None and decision.inputs:
            inputs = dict(decision.inputs)
        elif set(post.law.inputs) - {"r"}:
            inputs = {k: v for k, v in proxy_scale(post).items() if k in post.law.inputs}
        self.inputs = inputs
        draws = LawDraws.from_posterior(post, post.source, inputs=inputs)
        step = max(1, math.ceil(draws.n_samples / CURVE_DRAWS))
        self.draws = draws.select(slice(None, None, step))
        if decision is not None:
            self.weights = _decision_weights(decision, self.eval)
            self.constraints = decision.constraints
            self.mixture = decision.mixture.reindex(self.train).to_numpy(dtype=float)
            self.label = "recommended mixture"
            self.weights_text = decision.weights_description
        else:
            self.weights = np.full(len(self.eval), 1.0 / len(self.eval))
            self.constraints = Constraints.unconstrained(self.train)
            self.mixture = minimize_objective(
                self.draws, self.constraints, self.weights, "mean"
            ).mixture
            self.label = "posterior-mean optimum (equal weights, no constraints)"
            self.weights_text = f"equal weights over the {len(self.eval)} validation domains"
        self.scale_text = (
            "" if not inputs else " at " + ", ".join(f"{k} {v:.3g}" for k, v in inputs.items())
        )

    def overall(self, mixtures: np.ndarray) -> np.ndarray:
        """Aggregate expected loss (S, n) of mixtures (n, M) under the thinned draws."""
        return self.draws.mean_loss(np.asarray(mixtures, float)) @ self.weights


def _decision_weights(decision, eval_domains) -> np.ndarray:
    rows = decision.losses[
        (decision.losses["mixture"] == "recommended")
        & (decision.losses["eval_domain"].isin(eval_domains))
    ]
    w = rows.set_index("eval_domain")["weight"].reindex(eval_domains).fillna(0.0)
    w = w.to_numpy(dtype=float)
    return w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))


# ------------------------------------------------------------------------------ HTML pieces
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;
max-width:1200px;padding:1em 2em;color:#222;line-height:1.4}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
td,th{border:1px solid #ddd;padding:.2em .6em;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#555;max-width:60em}
pre{background:#f8f8f8;padding:.8em;overflow-x:auto;font-size:.85em}
.warn{background:#fff3cd;border:1px solid #e0b100;padding:.6em 1em}
.ok{color:#176917}.bad{color:#a40000;font-weight:bold}
nav a{margin-right:1em}
"""


def _esc(text) -> str:
    return html.escape(str(text))


def _page(title: str, view: _View, sections: list[tuple[str, str, str]]) -> str:
    post = view.post
    nav = " ".join(f'<a href="#{key}">{_esc(head)}</a>' for key, head, _ in sections)
    warn = ""
    if post.diagnostics_warning:
        warn = (
            f'<p class="warn"><b>The fit failed its diagnostics gate:</b> '
            f"{_esc(post.diagnostics_warning)}. Predictions and decisions below may be "
            "wrong; refit with more tuning or draws.</p>"
        )
    body = "\n".join(
        f'<section id="{key}"><h2>{_esc(head)}</h2>\n{content}\n</section>'
        for key, head, content in sections
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_esc(title)}</h1>\n"
        f"<p>Law <b>{_esc(post.law.name)}</b> ({_esc(post.law.description)}), model "
        f"<b>{_esc(post.spec.name)}</b>; {len(view.train)} training x {len(view.eval)} "
        f"validation domains; {post.fit_data().n_runs} runs; {post.n_samples} posterior "
        f"draws. Losses in nats per token; intervals are equal-tailed with mass "
        f"{view.prob:.0%}. bayesmix {__version__}.</p>\n{warn}\n<nav>{nav}</nav>\n"
        f"{body}\n</body>\n</html>\n"
    )


def _table(frame: pd.DataFrame, digits: int = 4) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in frame.columns)
    rows = []
    for _, row in frame.iterrows():
        cells = []
        for v in row:
            if isinstance(v, (float, np.floating)):
                cells.append("<td>–</td>" if not np.isfinite(v) else f"<td>{v:.{digits}f}</td>")
            else:
                cells.append(f"<td>{_esc(v)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _figure(fig, name: str, caption: str) -> str:
    """The matplotlib figure as an embedded PNG with a caption (``data-figure`` names it)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (
        f'<figure data-figure="{_esc(name)}"><img alt="{_esc(caption)}" '
        f'src="data:image/png;base64,{data}">'
        f"<figcaption>{_esc(caption)}</figcaption></figure>"
    )


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _grid(n: int, max_cols: int) -> tuple[int, int]:
    cols = min(n, max_cols, max(1, math.ceil(math.sqrt(n))))
    return math.ceil(n / cols), cols


def _fontsize(n: int) -> float:
    """Tick-label size for n labels along one axis."""
    return 9.0 if n <= 20 else (7.0 if n <= 40 else 5.5)


# ------------------------------------------------------------------------------ backtests
def _section_backtest(view: _View) -> tuple[str, str, str] | None:
    """The backtests stored with a target-scale posterior (:mod:`bayesmix.scaling.backtesting`):
    verdict, summary by split and a plot of the held-out errors against the distance."""
    bt = stored_backtest(view.post)
    if bt is None:
        return None
    order = ["split", "n", "size_ratio", "token_ratio", "distance", "coverage"]
    order += ["calibrated_coverage", "bias", "mae", "width"]
    summary = pd.DataFrame(bt["summary"])
    summary = summary[[c for c in order if c in summary.columns]]
    parts = [f"<p>{_esc(bt['verdict'])}</p>", _table(summary, 3)]
    cal = view.post.extrapolation
    if cal is not None:
        parts.append(f"<p>{_esc(cal.describe())}.</p>")
    target = bt.get("target")
    if target:
        parts.append(
            f"<p>This posterior's target lies at log-distance {target['distance']:.2f} beyond "
            f"the proxies: the learned extrapolation error is "
            f"{100 * target['extrapolation_share']:.0f}% of its predictive variance.</p>"
        )
    if bt.get("notes"):
        parts.append("<ul>" + "".join(f"<li>{_esc(n)}</li>" for n in bt["notes"]) + "</ul>")
    rec = pd.DataFrame(bt.get("records") or {})
    if len(rec):
        parts.append(_backtest_figure(rec, cal))
    return "backtest", "Backtests: extrapolation within the proxies", "\n".join(parts)


def _backtest_figure(rec: pd.DataFrame, cal) -> str:
    """Held-out errors against their distance (jittered), with the 90% band of the learned
    error (median own sd of the records) when the posterior has one."""
    fig = _new_figure(6.5, 3.2)
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    for name, g in rec.groupby("split", sort=False):
        x = g["distance"].to_numpy(float) + rng.uniform(-0.04, 0.04, len(g))
        ax.plot(x, g["error"].to_numpy(float), "o", ms=2, alpha=0.35, label=str(name))
    if cal is not None:
        u = np.linspace(0.0, max(float(rec["distance"].max()), 0.1) * 1.15, 50)
        s = float(np.median(rec["sd"]))
        k2 = float(np.mean(cal.kappa**2))
        t2 = float(np.mean(cal.tau**2 + cal.tau_mix**2))
        half = 1.645 * np.sqrt(k2 * s**2 + t2 * u**2)
        ax.fill_between(u, -half, half, color="grey", alpha=0.2, label="learned 90% band")
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xlabel("log-distance beyond the fitted size / tokens")
    ax.set_ylabel("observed - predicted (nats)")
    ax.legend(fontsize=8)
    return _figure(
        fig,
        "backtest",
        "Held-out proxy losses: error against distance, by split, with the 90% band of the "
        "learned error (median own spread)",
    )


# ------------------------------------------------------------------------------ 1. the fit
def _section_fit(view: _View) -> tuple[str, str, str]:
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
    parts = [f"<p>Diagnostics gate: {status}.</p>", _table(gate)]
    if d.failed:
        parts.append("<ul>" + "".join(f"<li>{_esc(f)}</li>" for f in d.failed) + "</ul>")
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
        parts.append(_table(shown, 3))
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
    ds = post.tree["posterior"]
    n = len(worst)
    fig = _new_figure(10, 1.9 * n + 0.4)
    axes = fig.subplots(n, 2, squeeze=False)
    for row, (_, w) in enumerate(worst.iterrows()):
        da = ds[w["variable"]]
        other = [x for x in da.dims if x not in ("chain", "draw")]
        values = da.transpose("chain", "draw", *other).values
        x = values.reshape(values.shape[:2] + (-1,))[..., int(w["index"])]  # (chain, draw)
        ax_t, ax_r = axes[row]
        for c in range(x.shape[0]):
            ax_t.plot(x[c], lw=0.6, alpha=0.8, label=f"chain {c}")
        ax_t.set_title(
            f"{w['parameter']}: trace (R-hat {w['r_hat']:.3f}, bulk ESS {w['ess_bulk']:.0f})",
            fontsize=9,
        )
        ax_t.set_xlabel("draw", fontsize=8)
        ranks = pd.Series(x.ravel()).rank().to_numpy().reshape(x.shape)
        bins = np.linspace(0.5, x.size + 0.5, 21)
        for c in range(x.shape[0]):
            counts, _ = np.histogram(ranks[c], bins)
            ax_r.stairs(counts, bins, lw=1.0)
        ax_r.axhline(x.shape[1] / 20, color="k", ls="--", lw=0.8)
        ax_r.set_title(f"{w['parameter']}: rank plot (flat = well mixed)", fontsize=9)
        ax_r.set_xlabel("rank over all chains", fontsize=8)
        for ax in (ax_t, ax_r):
            ax.tick_params(labelsize=7)
    return _figure(
        fig,
        "trace-rank",
        "Trace (left) and rank histograms per chain (right) of the worst "
        "parameters; the dashed line is the count expected if the chains mix.",
    )


# ------------------------------------------------------------------------------ 2. PPC
def _ppc_arrays(post):
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


def _section_ppc(view: _View) -> tuple[str, str, str]:
    obs, pred = _ppc_arrays(view.post)
    stacked = pred.stack(sample=("chain", "draw")).transpose("sample", "run", "eval_domain")
    lo, hi = credible_interval(stacked.values, view.prob, ci_kind=view.ci_kind)  # (run, K)
    med = np.quantile(stacked.values, 0.5, axis=0)
    y = obs.transpose("run", "eval_domain").values
    domains = [str(d) for d in obs["eval_domain"].values]
    k = len(domains)
    rows, cols = _grid(k, 6)
    fig = _new_figure(2.5 * cols + 0.5, 2.3 * rows + 0.5)
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
    fig_html = _figure(
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
    return "ppc", "Posterior predictive check", text + fig_html + _table(pd.DataFrame(table), 3)


# ------------------------------------------------------------------------------ 3. heatmap
def _matrix_param(post) -> str | None:
    """``t`` when the law has it (validation x training), else the first such parameter."""
    ds = post.tree["posterior"]
    names = [p.name for p in post.law.params if set(p.dims) == {"eval_domain", "train_domain"}]
    if "t" in names:
        return "t"
    return next((n for n in names if n in ds.data_vars), None)


def _section_heatmap(view: _View) -> tuple[str, str, str]:
    name = _matrix_param(view.post)
    if name is None:
        return (
            "slopes",
            "Slope matrix",
            f"<p>Law {_esc(view.post.law.name)} has no validation x training matrix.</p>",
        )
    da = view.post.tree["posterior"][name].transpose("chain", "draw", "eval_domain", "train_domain")
    draws = da.values.reshape((-1,) + da.shape[2:])
    mean, sd = draws.mean(0), draws.std(0)
    signed = name == "t"
    p_neg = (draws < 0).mean(0)
    k, m = mean.shape
    cell = min(0.75, max(0.2, 11.0 / max(m, 1)))
    fig = _new_figure(max(5.0, cell * m + 2.5), max(2.5, cell * k * 0.8 + 1.5))
    ax = fig.subplots()
    lim = float(np.nanmax(np.abs(mean))) or 1.0
    image = ax.imshow(
        mean,
        cmap="RdBu_r" if signed else "viridis",
        aspect="auto",
        vmin=-lim if signed else None,
        vmax=lim if signed else None,
    )
    fig.colorbar(image, ax=ax, shrink=0.8, label=f"posterior mean of {name}")
    ax.set_xticks(range(m), view.train, rotation=90, fontsize=_fontsize(m))
    ax.set_yticks(range(k), view.eval, fontsize=_fontsize(k))
    ax.set_xlabel("training domain")
    ax.set_ylabel("validation domain")
    cells = k * m
    what = "P(t < 0)" if signed else "posterior sd"
    extra = sd if not signed else p_neg
    if cells <= ANNOTATE_ONE:
        size = 7 if cells <= ANNOTATE_TWO else 5.5
        for i in range(k):
            for j in range(m):
                text = (
                    f"{mean[i, j]:.2f}\n{extra[i, j]:.2f}"
                    if cells <= ANNOTATE_TWO
                    else f"{extra[i, j]:.2f}"
                )
                shade = abs(mean[i, j]) / lim > 0.6 if signed else False
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=size,
                    color="white" if shade else "black",
                )
    note = {True: f"cells show the mean and {what}", False: f"cells show {what}"}[
        cells <= ANNOTATE_TWO
    ]
    caption = f"Posterior mean of {name} (validation x training domain)" + (
        f"; {note}."
        if cells <= ANNOTATE_ONE
        else f"; {k} x {m} cells are too small to annotate: {what} is the second panel."
    )
    if signed:
        caption += " Negative (blue): more of that training domain lowers that validation loss."
    out = [_figure(fig, "slopes", caption)]
    if cells > ANNOTATE_ONE:
        fig2 = _new_figure(max(5.0, cell * m + 2.5), max(2.5, cell * k * 0.8 + 1.5))
        ax2 = fig2.subplots()
        im2 = ax2.imshow(
            extra,
            cmap="PuOr_r" if signed else "magma",
            aspect="auto",
            vmin=0 if signed else None,
            vmax=1 if signed else None,
        )
        fig2.colorbar(im2, ax=ax2, shrink=0.8, label=what)
        ax2.set_xticks(range(m), view.train, rotation=90, fontsize=_fontsize(m))
        ax2.set_yticks(range(k), view.eval, fontsize=_fontsize(k))
        out.append(_figure(fig2, "slopes-uncertainty", f"{what} of each element of {name}."))
    return "slopes", f"Slope matrix {name}", "\n".join(out)


# ------------------------------------------------------------------------------ 4. simplex
def _through(r: np.ndarray, j: int, shares: np.ndarray) -> np.ndarray:
    """Mixtures on the line through ``r`` and vertex j with share ``shares`` of domain j (the
    other domains keep their proportions to each other)."""
    rest = np.delete(r, j)
    rest = rest / rest.sum() if rest.sum() > 0 else np.full(len(rest), 1.0 / len(rest))
    out = np.empty((len(shares), len(r)))
    out[:, j] = shares
    out[:, np.arange(len(r)) != j] = (1.0 - shares)[:, None] * rest[None, :]
    return out


def _section_simplex(view: _View, abc) -> tuple[str, str, str]:
    r, m = view.mixture, len(view.train)
    xs = np.linspace(0.0, 1.0, 41)
    rows, cols = _grid(m, 8)
    fig = _new_figure(2.3 * cols + 0.5, 1.9 * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    at_r = view.overall(r[None, :])[:, 0].mean()
    lo_c, hi_c = view.constraints.lower, view.constraints.upper
    covered = view.post.mixture_range()
    for j, dom in enumerate(view.train):
        ax = axes.flat[j]
        # the shares the fitted runs covered: outside it the curve is the law's form
        ax.axvspan(covered.low[j], covered.high[j], color="0.9", lw=0, zorder=0)
        values = view.overall(_through(r, j, xs))  # (S, n)
        lo, hi = credible_interval(values, view.prob, ci_kind=view.ci_kind)
        ax.fill_between(xs, lo, hi, color="tab:blue", alpha=0.25, lw=0)
        ax.plot(xs, values.mean(0), color="tab:blue", lw=1.2)
        ax.plot([r[j]], [at_r], "o", color="tab:red", ms=4)
        if lo_c[j] > 0:
            ax.axvline(lo_c[j], color="0.4", ls=":", lw=0.9)
        if hi_c[j] < 1:
            ax.axvline(hi_c[j], color="0.4", ls=":", lw=0.9)
        ax.set_title(dom, fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in axes.flat[m:]:
        ax.set_visible(False)
    fig.supxlabel("share of that training domain (others keep their proportions)", fontsize=9)
    fig.supylabel(f"expected loss{view.scale_text}", fontsize=9)
    lines = _figure(
        fig,
        "simplex-lines",
        f"Expected aggregate loss ({view.weights_text}) along the line through "
        f"the {view.label} (red dot) and each training domain's vertex: share 0 "
        f"on the left, the pure domain on the right; band: {view.prob:.0%} "
        "interval over posterior draws; dotted: that domain's share limits; grey: the "
        "shares the fitted runs covered (outside it the curve is the law's form).",
    )
    parts = [
        f"<p>Starting point: the {_esc(view.label)}: "
        + ", ".join(f"{_esc(d)} {v:.3f}" for d, v in zip(view.train, r))
        + ".</p>",
        lines,
    ]
    if abc is not None:
        parts.append(_ternary_figure(view, abc))
    else:
        parts.append("<p>No ternary view: it needs at least three training domains.</p>")
    return "simplex", "Loss across the simplex", "\n".join(parts)


def _ternary_domains(ternary, view: _View):
    if len(view.train) < 3:
        if ternary:
            raise errors.OptionError("--ternary needs at least three training domains")
        return None
    if ternary is None:
        top = np.argsort(-view.mixture, kind="stable")[:3]
        return [view.train[i] for i in sorted(top)]
    names = (
        [s.strip() for s in ternary.split(",")]
        if isinstance(ternary, str)
        else [str(s) for s in ternary]
    )
    if len(names) != 3 or len(set(names)) != 3:
        raise errors.OptionError(
            f"--ternary needs three different training domains, got {','.join(names)!r}",
            hint="e.g. --ternary web,code,books",
        )
    check_known_domains(names, view.train, "training")
    return names


def _ternary_xy(bary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Barycentric (n, 3) -> plane: vertex a at (0, 0), b at (1, 0), c at (1/2, sqrt(3)/2)."""
    return bary[:, 1] + 0.5 * bary[:, 2], bary[:, 2] * math.sqrt(3) / 2


def _ternary_figure(view: _View, abc) -> str:
    from matplotlib.tri import Triangulation

    idx = [view.train.index(d) for d in abc]
    r = view.mixture
    inside = float(r[idx].sum())
    if inside <= 0:
        return "<p>No ternary view: the three domains have no share in the starting point.</p>"
    n = 30
    bary = np.array([(i, j, n - i - j) for i in range(n + 1) for j in range(n + 1 - i)], float) / n
    mix = np.repeat(r[None, :], len(bary), axis=0)
    mix[:, idx] = inside * bary
    values = view.overall(mix)  # (S, n)
    x, y = _ternary_xy(bary)
    tri = Triangulation(x, y)
    fig = _new_figure(11, 4.8)
    axes = fig.subplots(1, 2)
    here = _ternary_xy((r[idx] / inside)[None, :])
    fit_mix = view.post.fit_data().mixtures[view.train].to_numpy(dtype=float)
    share = fit_mix[:, idx].sum(1)
    keep = share > 0
    runs_xy = _ternary_xy(fit_mix[keep][:, idx] / share[keep, None])
    optima_xy = None
    if view.decision is not None and view.decision.draw_optima is not None:
        opt = view.decision.draw_optima.transpose("sample", "train_domain").values
        opt = opt[:: max(1, len(opt) // 300)]
        s = opt[:, idx].sum(1)
        opt = opt[s > 0]
        optima_xy = _ternary_xy(opt[:, idx] / s[s > 0, None])
    for ax, z, label, cmap in (
        (axes[0], values.mean(0), "posterior mean", "viridis"),
        (axes[1], values.std(0), "posterior sd", "magma"),
    ):
        cs = ax.tricontourf(tri, z, levels=14, cmap=cmap)
        fig.colorbar(cs, ax=ax, shrink=0.8, label=f"expected loss: {label}")
        ax.plot([0, 1, 0.5, 0], [0, 0, math.sqrt(3) / 2, 0], color="k", lw=0.8)
        if optima_xy is not None:
            ax.plot(*optima_xy, ".", color="orange", ms=2, alpha=0.5, label="per-draw optima")
        # white with a black rim: visible on any colour, and on the triangle's edges (runs
        # with a zero share of a domain), which clipping and a white rim used to hide
        ax.scatter(
            *runs_xy,
            s=8 + 40 * share[keep],
            facecolors="white",
            edgecolors="black",
            linewidths=0.6,
            zorder=3,
            clip_on=False,
            label="fitted runs",
        )
        ax.plot(
            *here, "*", color="red", ms=13, markeredgecolor="k", label=view.label.split(" (")[0]
        )
        for (px, py), name, ha in (
            ((0, 0), abc[0], "right"),
            ((1, 0), abc[1], "left"),
            ((0.5, math.sqrt(3) / 2), abc[2], "center"),
        ):
            ax.text(px, py + (0.03 if ha == "center" else -0.04), name, ha=ha, fontsize=9)
        ax.set_aspect("equal")
        ax.axis("off")
    axes[0].legend(loc="upper left", fontsize=7, framealpha=0.8)
    others = [d for d in view.train if d not in abc]
    rest = (
        f" The other {len(others)} domains keep their shares of the starting point "
        f"({1 - inside:.3f} in all)."
        if others
        else ""
    )
    return _figure(
        fig,
        "ternary",
        f"Expected aggregate loss over mixtures of {', '.join(abc)} "
        f"(a slice of the simplex through the {view.label}, red star).{rest} "
        "Circles: fitted runs projected onto the slice (size: their share of these "
        "three domains; the region they span is what the data cover)"
        + ("; orange: per-draw optima" if optima_xy is not None else "")
        + ".",
    )


# ------------------------------------------------------------------------------ 5. decision
def _section_decision(view: _View) -> tuple[str, str, str]:
    rep = view.decision
    parts = [f"<pre>{_esc(rep.to_text(banner=False))}</pre>"]
    rec = rep.recommendation
    m = len(rec)
    fig = _new_figure(8, 0.3 * m + 1.3)
    ax = fig.subplots()
    ypos = np.arange(m)[::-1]
    ax.barh(
        ypos,
        rec["max_allowed"] - rec["min_allowed"],
        left=rec["min_allowed"],
        color="0.92",
        height=0.8,
        label="allowed range",
    )
    if rep.draw_optima is not None:
        opt = rep.draw_optima.transpose("sample", "train_domain").values
        parts_ = ax.violinplot(
            [opt[:, j] for j in range(m)],
            positions=ypos,
            orientation="horizontal",
            showextrema=False,
            widths=0.8,
        )
        for body in parts_["bodies"]:
            body.set_alpha(0.35)
    if rep.optimum_spread is not None:
        sp = rep.optimum_spread.set_index("train_domain").reindex(rec["train_domain"])
        ax.hlines(
            ypos,
            sp["lower"],
            sp["upper"],
            color="tab:blue",
            lw=2,
            label=f"per-draw optimum, {rep.prob:.0%} interval",
        )
        ax.plot(sp["median"], ypos, "|", color="tab:blue", ms=10)
    ax.plot(rec["share"], ypos, "o", color="tab:red", label="recommended")
    ax.plot(rec["baseline"], ypos, "x", color="k", label=f"baseline ({rep.baseline_label})")
    ax.set_yticks(ypos, rec["train_domain"], fontsize=_fontsize(m))
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of training tokens")
    fig.legend(fontsize=7, loc="outside lower center", ncol=4)
    parts.append(
        _figure(
            fig,
            "optimum-spread",
            "The recommended mixture (red), the baseline (x) and how uncertain the "
            "optimum is: where each posterior draw's own optimum puts each "
            "training domain (violin and interval); grey: allowed range.",
        )
    )
    return "decision", "Decision", "\n".join(parts)


# ------------------------------------------------------------------------------ 6. ledger
def _section_ledger(view: _View, ledger) -> tuple[str, str, str]:
    with Ledger.open(ledger) as led:
        runs = led.runs()
        try:
            table = led.run_table()
        except errors.LedgerError:
            table = None
        constraints = led.constraints
        target = led.settings.get("target_weights") or None
    w, w_text = (
        resolve_weights(view.eval, target, allow_subset=True)
        if target
        else (
            np.full(len(view.eval), 1.0 / len(view.eval)),
            f"equal weights over the {len(view.eval)} validation domains",
        )
    )
    observed = pd.Series(dtype=float)
    if table is not None:
        final = table.final().losses
        final = final.reindex(columns=view.eval)
        ok = final.notna().all(axis=1).to_numpy()
        observed = pd.Series(
            final.to_numpy(dtype=float)[ok] @ w,
            index=[str(i[0]) if isinstance(i, tuple) else str(i) for i in final.index[ok]],
        )
    round_of = runs.set_index("run")["round"]
    rows = []
    for rnd in sorted(runs["round"].unique()):
        these = runs[runs["round"] == rnd]
        done = [r for r in observed.index if round_of.get(r, -1) <= rnd]
        best = float(observed[done].min()) if done else float("nan")
        row = {
            "round": int(rnd),
            "proposed": int(len(these)),
            "completed": int((these["status"] == "completed").sum()),
            "strategy": ", ".join(sorted(set(these["strategy"].astype(str)))),
            "best observed so far": best,
            "posterior": "",
            "recommendation": "",
            "expected loss": float("nan"),
            "lower": float("nan"),
            "upper": float("nan"),
        }
        paths = [p for p in these["posterior"].dropna().unique() if p]
        path = next((Path(p) for p in paths if Path(p).is_file()), None)
        if path is not None:
            try:
                post = Posterior.load(path)
                cons = (
                    constraints
                    if tuple(constraints.domains) == post.train_domains
                    else Constraints.unconstrained(post.train_domains)
                )
                draws = LawDraws.from_posterior(post, inputs=view.inputs or None)
                step = max(1, math.ceil(draws.n_samples / CURVE_DRAWS))
                draws = draws.select(slice(None, None, step))
                best_mix = minimize_objective(draws, cons, w, "mean").mixture
                vals = draws.mean_loss(best_mix[None, :])[:, 0, :] @ w
                lo, hi = credible_interval(vals, view.prob, ci_kind=view.ci_kind)
                row.update(
                    {
                        "posterior": path.name,
                        "recommendation": ", ".join(
                            f"{d} {v:.2f}" for d, v in zip(post.train_domains, best_mix)
                        ),
                        "expected loss": float(vals.mean()),
                        "lower": float(lo),
                        "upper": float(hi),
                    }
                )
            except errors.BayesmixError as err:
                row["posterior"] = f"{path.name}: {err}"
        rows.append(row)
    frame = pd.DataFrame(rows)
    parts = [
        f"<p>Ledger {_esc(Path(ledger).name)}: {len(runs)} runs in {len(frame)} rounds; "
        f"aggregate loss with {_esc(w_text)}. Each round's recommendation is the "
        "posterior-mean optimum (ledger constraints) of the posterior its proposals came "
        "from, i.e. fitted to the runs of earlier rounds.</p>"
    ]
    if len(frame):
        fig = _new_figure(7.5, 3.6)
        ax = fig.subplots()
        # a line through each round's value, marked: a post-step ends at the last round and
        # hid its value
        ax.plot(
            frame["round"],
            frame["best observed so far"],
            "-o",
            drawstyle="steps-post",
            color="k",
            ms=4,
            label="best observed (runs of rounds <= r)",
        )
        ax.set_xlim(frame["round"].min() - 0.5, frame["round"].max() + 0.5)
        has = frame["expected loss"].notna()
        if has.any():
            f = frame[has]
            ax.errorbar(
                f["round"],
                f["expected loss"],
                yerr=[f["expected loss"] - f["lower"], f["upper"] - f["expected loss"]],
                fmt="o",
                color="tab:red",
                capsize=3,
                label=f"recommendation: expected loss, {view.prob:.0%} interval",
            )
        ax.set_xlabel("round")
        ax.set_ylabel("aggregate loss (nats per token)")
        ax.set_xticks(frame["round"].tolist())
        ax.legend(fontsize=8)
        parts.append(
            _figure(
                fig,
                "ledger-progress",
                "The loop's progress: best observed aggregate loss so far (black) "
                "and each round's recommendation with its interval (red).",
            )
        )
    parts.append(_table(frame, 4))
    return "ledger", "Active-learning progress", "\n".join(parts)


def figure_names(html_text: str) -> list[str]:
    """The ``data-figure`` names in a report (for tests and checks)."""
    import re

    return re.findall(r'data-figure="([^"]+)"', html_text)


__all__: Sequence[str] = ["build_html", "write_report", "load_decision", "figure_names"]
