"""The report's sections on the decision: the recommended mixture with the spread of the
optimum (5), and the active-learning loop's progress per round from its ledger (6)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.data.constraints import Constraints
from bayesmix.decisions.draws import LawDraws
from bayesmix.decisions.inputs import resolve_weights
from bayesmix.decisions.optimize import minimize_objective
from bayesmix.loop.ledger import Ledger
from bayesmix.posterior.intervals import credible_interval
from bayesmix.posterior.posterior import Posterior
from bayesmix.reporting.figures import (
    embed_figure,
    esc,
    html_table,
    new_figure,
    tick_fontsize,
)
from bayesmix.reporting.view import CURVE_DRAWS, View


# ------------------------------------------------------------------------------ 5. decision
def section_decision(view: View) -> tuple[str, str, str]:
    """The decision report's text and the recommended mixture with the spread of the optimum
    over draws, the baseline and the allowed ranges."""
    rep = view.decision
    parts = [f"<pre>{esc(rep.to_text(banner=False))}</pre>"]
    rec = rep.recommendation
    m = len(rec)
    fig = new_figure(8, 0.3 * m + 1.3)
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
    ax.set_yticks(ypos, rec["train_domain"], fontsize=tick_fontsize(m))
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of training tokens")
    fig.legend(fontsize=7, loc="outside lower center", ncol=4)
    parts.append(
        embed_figure(
            fig,
            "optimum-spread",
            "The recommended mixture (red), the baseline (x) and how uncertain the "
            "optimum is: where each posterior draw's own optimum puts each "
            "training domain (violin and interval); grey: allowed range.",
        )
    )
    return "decision", "Decision", "\n".join(parts)


# ------------------------------------------------------------------------------ 6. ledger
def section_ledger(view: View, ledger) -> tuple[str, str, str]:
    """The loop's progress per round of the ``ledger`` (a path): best observed aggregate loss so
    far and each round's recommendation from the posterior its proposals came from."""
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
    frame = _rounds(view, runs, observed, constraints, w)
    parts = [
        f"<p>Ledger {esc(Path(ledger).name)}: {len(runs)} runs in {len(frame)} rounds; "
        f"aggregate loss with {esc(w_text)}. Each round's recommendation is the "
        "posterior-mean optimum (ledger constraints) of the posterior its proposals came "
        "from, i.e. fitted to the runs of earlier rounds.</p>"
    ]
    if len(frame):
        parts.append(_progress_figure(frame, view.prob))
    parts.append(html_table(frame, 4))
    return "ledger", "Active-learning progress", "\n".join(parts)


def _rounds(
    view: View, runs: pd.DataFrame, observed: pd.Series, constraints, w: np.ndarray
) -> pd.DataFrame:
    """One row per round: runs proposed and completed, strategies, the best ``observed``
    aggregate loss (per run) of the runs of rounds up to it, and the recommendation of the
    first readable posterior its proposals came from."""
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
            row.update(_recommendation(view, path, constraints, w))
        rows.append(row)
    return pd.DataFrame(rows)


def _recommendation(view: View, path: Path, constraints, w: np.ndarray) -> dict:
    """The posterior-mean optimum of the posterior in ``path`` under the ledger's
    ``constraints`` (when they name its domains) and its expected aggregate loss with the
    interval; a posterior that cannot be read or used gives the error instead."""
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
    except errors.BayesmixError as err:
        return {"posterior": f"{path.name}: {err}"}
    return {
        "posterior": path.name,
        "recommendation": ", ".join(f"{d} {v:.2f}" for d, v in zip(post.train_domains, best_mix)),
        "expected loss": float(vals.mean()),
        "lower": float(lo),
        "upper": float(hi),
    }


def _progress_figure(frame: pd.DataFrame, prob: float) -> str:
    """Best observed aggregate loss per round (a line) and each round's recommendation with
    its interval (``prob`` mass), from :func:`_rounds`' table."""
    fig = new_figure(7.5, 3.6)
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
            label=f"recommendation: expected loss, {prob:.0%} interval",
        )
    ax.set_xlabel("round")
    ax.set_ylabel("aggregate loss (nats per token)")
    ax.set_xticks(frame["round"].tolist())
    ax.legend(fontsize=8)
    return embed_figure(
        fig,
        "ledger-progress",
        "The loop's progress: best observed aggregate loss so far (black) "
        "and each round's recommendation with its interval (red).",
    )


__all__ = ["section_decision", "section_ledger"]
