"""The decision report: the recommended mixture, its loss intervals next to the baseline's,
their paired comparison, the spread of the optimum, the guarantees, the decision in benchmark
points (when accuracy links were given) and notes.

:class:`DecisionReport` is what :func:`bayesmix.decisions.decision.decide` returns: tidy
DataFrames (shares are fractions of training tokens, losses nats per token), shown as text
(:meth:`DecisionReport.to_text`, one small function per section), saved as JSON
(:meth:`DecisionReport.to_dict`) or as one long CSV table (:meth:`DecisionReport.to_frame`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from bayesmix import errors
from bayesmix.data.constraints import Constraints
from bayesmix.decisions.inputs import REPORT_FORMAT
from bayesmix.decisions.scale import ScaleShift
from bayesmix.decisions.task_groups import accuracy_text
from bayesmix.io import atomic_write_text

#: Name of the aggregate row in loss tables (as in ``Prediction.intervals``).
OVERALL = "overall"
#: Columns of :meth:`DecisionReport.to_frame`, the CSV layout.
FRAME_COLUMNS = ["section", "mixture", "domain", "statistic", "value", "text"]


@dataclass
class DecisionReport:
    """Everything needed to decide, as tidy tables (shares are fractions, losses nats/token).

    Built by :func:`bayesmix.decide` (or read back by
    :func:`bayesmix.reporting.html_report.load_decision`); ``print(report)`` shows it as text,
    :meth:`save` writes JSON or CSV, :meth:`to_html` the HTML report.

    Parameters
    ----------
    recommendation : pandas.DataFrame
        train_domain, share, baseline, min_allowed, max_allowed [, epochs, baseline_epochs:
        passes over each domain's unique data at the target token budget, for a law that
        counts repeated data (``<law>+repeat``)].
    losses : pandas.DataFrame
        mixture (recommended/baseline), eval_domain (``overall`` = weighted aggregate), weight,
        mean, median, lower, upper [, pred_lower, pred_upper].
    comparison : pandas.DataFrame
        eval_domain, improvement mean/lower/upper (baseline minus recommended: positive means
        the recommendation is better), p_better (share of draws where it is), p_worse (share
        of draws where the recommendation's loss is higher).
    optimum_spread : pandas.DataFrame or None
        train_domain, mean, median, lower, upper of the per-draw optima.
    draw_optima : xarray.DataArray or None
        Every draw's optimum (sample, train_domain), or None when not computed.
    p_beats_baseline : float
        Posterior probability that the recommendation's overall loss is lower.
    objective, objective_description : str
        The objective (``mean``, ``quantile:0.9``, ...) and its description.
    objective_value : float
        The objective at the recommendation.
    weights_description, baseline_label : str
        How validation losses were weighted; which baseline was compared.
    prob : float
        Mass of every interval (the problem's ``ci_prob``).
    n_samples : int
        Posterior draws used.
    constraints : Constraints
        The feasible set.
    diagnostics_warning, source, notes, law, optimizer_status
        The posterior's failed checks (or None), its file, notes, the mixing law's name and
        one line on how the optimiser ended (SLSQP converged or not at the winning start, how
        many starts reached the best).
    scale_shift, inputs
        The decision at the proxies' vs the target's scale, and the target scale.
    guarantees : pandas.DataFrame or None
        One row per (expanded) chance constraint: guarantee, kind, domain, bound,
        prob_required, prob_achieved (exact, on the draws), met; ``unguaranteed_value``: the
        objective without the guarantees (the price of the guarantees is the difference).
    ci_kind : {"eti", "hdi"}
        Interval kind of every interval.
    accuracy_changes : pandas.DataFrame or None
        The decision in benchmark points (:func:`~bayesmix.decisions.task_groups.accuracy_changes`
        of this report: task, accuracy_baseline, accuracy, change, lower, upper, p_better,
        link_rmse; fractions), or None.

    Examples
    --------
    >>> import bayesmix as bm
    >>> rec = bm.decide(post)                     # doctest: +SKIP
    >>> rec.mixture                               # doctest: +SKIP
    >>> print(rec)                                # doctest: +SKIP
    >>> rec.save("decision.json")                 # doctest: +SKIP
    """

    recommendation: pd.DataFrame
    losses: pd.DataFrame
    comparison: pd.DataFrame
    optimum_spread: pd.DataFrame | None
    draw_optima: xr.DataArray | None
    p_beats_baseline: float
    objective: str
    objective_description: str
    objective_value: float
    weights_description: str
    baseline_label: str
    prob: float
    n_samples: int
    constraints: Constraints
    diagnostics_warning: str | None = None
    source: str | None = None
    notes: list[str] = field(default_factory=list)
    law: str = ""
    optimizer_status: str = ""
    #  The decision at the proxies' scale vs the target's (:mod:`bayesmix.decisions.scale`), when
    # the law  takes model size and tokens and a target scale was given.
    scale_shift: ScaleShift | None = None
    #: The scale the decision is made at ({"n_params": N, "tokens": D}), or empty.
    inputs: dict = field(default_factory=dict)
    #  Chance constraints and their exact probabilities (:mod:`bayesmix.decisions.guarantees`), or
    # None.
    guarantees: pd.DataFrame | None = None
    unguaranteed_value: float | None = None
    #: Interval kind of every interval in the report: "eti" (equal-tailed) or "hdi".
    ci_kind: str = "eti"
    accuracy_changes: pd.DataFrame | None = None

    @property
    def mixture(self) -> pd.Series:
        """The recommended shares, indexed by training domain."""
        return self.recommendation.set_index("train_domain")["share"]

    # ---------------------------------------------------------------------- text
    def _repr_html_(self) -> str:
        import html

        return (
            f"<div><pre>{html.escape(self.to_text(banner=False))}</pre>"
            + self.recommendation.to_html(index=False, float_format=lambda v: f"{v:.4f}")
            + "</div>"
        )

    def to_text(self, digits: int = 4, *, banner: bool = True) -> str:
        """The report as readable text; a failed-diagnostics warning comes first and loud.

        Parameters
        ----------
        digits : int, default 4
            Decimals of losses.
        banner : bool, default True
            Frame a failed-diagnostics warning in a terminal banner of ``!``; False writes it
            as one plain line (the HTML report shows it as a styled warning of its own).

        Returns
        -------
        str
            Objective, mixture table, loss table with intervals, guarantees, notes.
        """
        pct = f"{self.prob:.0%}" + (" HDI" if self.ci_kind == "hdi" else "")
        out = self._text_warning(banner)
        out += self._text_header(digits)
        out += self._text_mixture(pct)
        out += self._text_losses(pct, digits)
        out += self._text_guarantees(digits)
        if self.accuracy_changes is not None and len(self.accuracy_changes):
            out += accuracy_text(self.accuracy_changes, self.prob)
        out.append(
            f"P(recommended beats baseline on the overall loss) = {self.p_beats_baseline:.3f}"
        )
        out += [f"note: {note}" for note in self.notes]
        return "\n".join(out)

    def _text_warning(self, banner: bool) -> list[str]:
        """The failed-diagnostics warning: a banner of ``!``, or one plain line."""
        if not self.diagnostics_warning:
            return []
        if not banner:
            return [f"WARNING: {self.diagnostics_warning}", ""]
        bar = "!" * 78
        return [
            bar,
            f"WARNING: {self.diagnostics_warning}",
            "The intervals and the recommendation below may be wrong; refit (more "
            "draws, more tuning, or a better model) before relying on them.",
            bar,
            "",
        ]

    def _text_header(self, digits: int) -> list[str]:
        """Source, law and draws; the objective; the optimiser; scale shift; aggregate."""
        law = f"law {self.law}, " if self.law else ""
        out = [
            f"Decision report ({self.source or 'posterior'}, {law}{self.n_samples} draws)",
            f"objective: {self.objective_description} [{self.objective}] = "
            f"{self.objective_value:.{digits}f}",
        ]
        if self.optimizer_status:
            out.append(f"optimiser: {self.optimizer_status}")
        if self.scale_shift is not None:
            out.append(self.scale_shift.to_text())
        out += [f"aggregate: {self.weights_description}; baseline: {self.baseline_label}", ""]
        return out

    def _text_mixture(self, pct: str) -> list[str]:
        """The recommended and baseline shares, the allowed range, the per-draw optimum."""
        cols = {
            "train_domain": "train_domain",
            "share": "recommended",
            "baseline": "baseline",
            "min_allowed": "min",
            "max_allowed": "max",
        }
        if "epochs" in self.recommendation:  # a law that counts repeated data, at a budget
            cols.update(epochs="epochs", baseline_epochs="baseline epochs")
        table = self.recommendation[list(cols)].rename(columns=cols)
        if self.optimum_spread is not None:
            sp = self.optimum_spread.set_index("train_domain")
            table[f"per-draw optimum median [{pct}]"] = [
                f"{sp.at[d, 'median']:.3f} [{sp.at[d, 'lower']:.3f}, {sp.at[d, 'upper']:.3f}]"
                for d in table["train_domain"]
            ]
        return [
            "Mixture (shares of training tokens)",
            table.to_string(index=False, float_format=lambda v: f"{v:.4f}"),
            "",
        ]

    def _text_losses(self, pct: str, digits: int) -> list[str]:
        """Loss intervals of both mixtures per domain, the paired improvement, the predictive
        interval of one run's overall loss."""
        loss = self.losses.set_index(["mixture", "eval_domain"])
        cmp = self.comparison.set_index("eval_domain")
        rows = []
        for dom in cmp.index:
            r, b = loss.loc[("recommended", dom)], loss.loc[("baseline", dom)]
            c = cmp.loc[dom]
            rows.append(
                {
                    "eval_domain": dom,
                    "weight": r["weight"],
                    "recommended": _fmt_interval(r, digits),
                    "baseline": _fmt_interval(b, digits),
                    "improvement": f"{c['improvement_mean']:+.{digits}f} "
                    f"[{c['improvement_lower']:+.{digits}f}, "
                    f"{c['improvement_upper']:+.{digits}f}]",
                    "P(better)": f"{c['p_better']:.3f}",
                    "P(worse)": f"{c['p_worse']:.3f}" if "p_worse" in c else "",
                }
            )
        out = [
            f"Loss (nats/token): posterior mean [{pct} interval of the expected loss]",
            pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"),
        ]
        if "pred_lower" in self.losses:
            o = loss.loc[("recommended", OVERALL)]
            out.append(
                f"{pct} predictive interval of one run's measured overall loss with the "
                f"recommendation: [{o['pred_lower']:.{digits}f}, "
                f"{o['pred_upper']:.{digits}f}]"
            )
        return out + [""]

    def _text_guarantees(self, digits: int) -> list[str]:
        """Each guarantee's required and achieved probability, and their price."""
        g = self.guarantees
        if g is None or not len(g):
            return []
        table = pd.DataFrame(
            {
                "guarantee": g["guarantee"],
                "required": g["prob_required"],
                "achieved": g["prob_achieved"],
                "met": np.where(g["met"], "yes", "NO"),
            }
        )
        out = [
            "Guarantees (probability over posterior draws, checked exactly; no-worse "
            "is paired per draw against the baseline)",
            table.to_string(index=False, float_format=lambda v: f"{v:.3f}"),
        ]
        if self.unguaranteed_value is not None:
            out.append(
                f"price of the guarantees: objective {self.objective_value:.{digits}f}"
                f" vs {self.unguaranteed_value:.{digits}f} without them"
            )
        return out + [""]

    def __str__(self) -> str:
        return self.to_text()

    # ---------------------------------------------------------------------- JSON / CSV
    def to_dict(self, include_draw_optima: bool = False) -> dict:
        """JSON-ready dict: tables as lists of records, NaN as null."""
        out = {
            "format": REPORT_FORMAT,
            "diagnostics_warning": self.diagnostics_warning,
            "source": self.source,
            "law": self.law,
            "objective": self.objective,
            "objective_description": self.objective_description,
            "objective_value": self.objective_value,
            "optimizer_status": self.optimizer_status,
            "weights": self.weights_description,
            "baseline": self.baseline_label,
            "p_beats_baseline": self.p_beats_baseline,
            "prob": self.prob,
            "ci_kind": self.ci_kind,
            "n_samples": self.n_samples,
            "constraints": self.constraints.to_dict(),
            "notes": list(self.notes),
            "inputs": dict(self.inputs),
            "scale_shift": None if self.scale_shift is None else self.scale_shift.to_dict(),
            "recommendation": _records(self.recommendation),
            "losses": _records(self.losses),
            "comparison": _records(self.comparison),
            "optimum_spread": (
                None if self.optimum_spread is None else _records(self.optimum_spread)
            ),
            "guarantees": (None if self.guarantees is None else _records(self.guarantees)),
            "unguaranteed_value": self.unguaranteed_value,
            "accuracy_changes": (
                None if self.accuracy_changes is None else _records(self.accuracy_changes)
            ),
        }
        if include_draw_optima and self.draw_optima is not None:
            out["draw_optima"] = {
                "train_domains": [str(d) for d in self.draw_optima["train_domain"].values],
                "shares": self.draw_optima.transpose("sample", "train_domain").values.tolist(),
            }
        return out

    def to_json(self, include_draw_optima: bool = False) -> str:
        return json.dumps(self.to_dict(include_draw_optima), indent=2)

    def to_frame(self, include_draw_optima: bool = False) -> pd.DataFrame:
        """One long tidy table (the CSV layout): section, mixture, domain, statistic, value, text.

        Numbers are in ``value``; rows of section ``meta`` carry text (objective, weights,
        diagnostics warning, notes) in ``text``.
        """
        rec = self.recommendation
        parts = [
            _long("mixture", rec, "train_domain", ["share"], "recommended"),
            _long(
                "mixture",
                rec.rename(columns={"baseline": "share", "share": "_"}),
                "train_domain",
                ["share"],
                "baseline",
            ),
            _long("mixture", rec, "train_domain", ["min_allowed", "max_allowed"], "constraint"),
            *(
                [
                    _long("epochs", rec, "train_domain", ["epochs"], "recommended"),
                    _long(
                        "epochs",
                        rec.rename(columns={"baseline_epochs": "epochs", "epochs": "_"}),
                        "train_domain",
                        ["epochs"],
                        "baseline",
                    ),
                ]
                if "epochs" in rec
                else []
            ),
            _long(
                "loss",
                self.losses,
                "eval_domain",
                ["weight", "mean", "median", "lower", "upper", "pred_lower", "pred_upper"],
                None,
            ),
            _long(
                "comparison",
                self.comparison,
                "eval_domain",
                ["improvement_mean", "improvement_lower", "improvement_upper"]
                + ["p_better", "p_worse"],
                "recommended vs baseline",
            ),
        ]
        if self.guarantees is not None and len(self.guarantees):
            parts.append(_guarantee_rows(self.guarantees))
        if self.accuracy_changes is not None and len(self.accuracy_changes):
            stats = ["accuracy_baseline", "accuracy", "change", "lower", "upper", "p_better"]
            parts.append(
                _long(
                    "accuracy",
                    self.accuracy_changes,
                    "task",
                    [*stats, "link_rmse"],
                    "recommended vs baseline",
                )
            )
        if self.optimum_spread is not None:
            stats = ["mean", "median", "lower", "upper"]
            parts.append(
                _long(
                    "optimum_spread", self.optimum_spread, "train_domain", stats, "per-draw optimum"
                )
            )
        if include_draw_optima and self.draw_optima is not None:
            parts.append(_draw_optimum_rows(self.draw_optima))
        parts.append(self._meta_rows())
        out = pd.concat(parts, ignore_index=True)
        out["text"] = out["text"].fillna("") if "text" in out else ""
        return out[FRAME_COLUMNS]

    def _meta_rows(self) -> pd.DataFrame:
        """Section ``meta``: the scalars (value) and the descriptions and notes (text)."""
        meta = [
            ("objective_value", self.objective_value, self.objective),
            ("p_beats_baseline", self.p_beats_baseline, self.baseline_label),
            ("prob", self.prob, ""),
            ("n_samples", float(self.n_samples), ""),
            ("objective", math.nan, self.objective_description),
            ("weights", math.nan, self.weights_description),
            ("law", math.nan, self.law),
            ("optimizer", math.nan, self.optimizer_status),
        ]
        if self.diagnostics_warning:
            meta.append(("diagnostics_warning", math.nan, self.diagnostics_warning))
        meta += [("note", math.nan, n) for n in self.notes]
        return pd.DataFrame(
            {
                "section": "meta",
                "mixture": "",
                "domain": "",
                "statistic": [m[0] for m in meta],
                "value": [m[1] for m in meta],
                "text": [m[2] for m in meta],
            }
        )

    def to_html(
        self,
        posterior,
        path: str | Path | None = None,
        *,
        ledger=None,
        ternary=None,
        force: bool = False,
    ):
        """The HTML report of ``posterior`` with this decision (:func:`bayesmix.report`).

        Parameters
        ----------
        posterior : Posterior or path
            The posterior (or its file) this decision came from.
        path : str or path, optional
            Where to write the page (an existing file only with ``force``).
        ledger : path, optional
            An experiment ledger for the progress section.
        ternary : sequence of str or str, optional
            Three training domains for the ternary view.
        force : bool, default False
            Replace an existing file.

        Returns
        -------
        str or pathlib.Path
            The page as text without ``path``, else the path written.
        """
        import bayesmix  # the public API: reporting sits above the decisions (ARCHITECTURE.md)

        return bayesmix.report(
            path,
            posterior,
            decision=self,
            ledger=ledger,
            ternary=ternary,
            ci_prob=self.prob,
            ci_kind=self.ci_kind,
            force=force,
        )

    def save(self, path: str | Path, include_draw_optima: bool = False) -> Path:
        """Write the report as JSON or CSV (by suffix), atomically.

        Parameters
        ----------
        path : str or path
            A ``.json`` file (:meth:`to_json`) or ``.csv`` file (:meth:`to_frame`'s table).
        include_draw_optima : bool, default False
            Also write every draw's optimum.

        Returns
        -------
        pathlib.Path
            ``path``.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".json":
            text = self.to_json(include_draw_optima)
        elif suffix == ".csv":
            text = self.to_frame(include_draw_optima).to_csv(index=False)
        else:
            raise errors.FormatError(
                f"cannot write a report as {suffix or 'no suffix'!r}",
                source=str(path),
                hint="use a .json or .csv file name",
            )
        atomic_write_text(path, text)  # the one atomic writer (WriteError on failure)
        return path


def _long(section: str, frame: pd.DataFrame, domain_col: str, stats, mixture) -> pd.DataFrame:
    """``frame``'s ``stats`` columns as long rows of :data:`FRAME_COLUMNS` (without text);
    ``mixture`` None keeps the frame's own mixture column."""
    stats = [s for s in stats if s in frame]
    long = frame.melt(
        id_vars=[domain_col] + (["mixture"] if mixture is None else []),
        value_vars=stats,
        var_name="statistic",
        value_name="value",
    )
    long = long.rename(columns={domain_col: "domain"})
    if mixture is not None:
        long["mixture"] = mixture
    long["section"] = section
    return long


def _guarantee_rows(guarantees: pd.DataFrame) -> pd.DataFrame:
    """Section ``guarantee``: bound, required and achieved probability, met (0/1)."""
    g = guarantees.assign(met=guarantees["met"].astype(float))
    long = g.melt(
        id_vars=["guarantee", "domain"],
        value_vars=["bound", "prob_required", "prob_achieved", "met"],
        var_name="statistic",
        value_name="value",
    )
    return pd.DataFrame(
        {
            "section": "guarantee",
            "mixture": "recommended",
            "domain": long["domain"],
            "statistic": long["statistic"],
            "value": long["value"],
            "text": long["guarantee"],
        }
    )


def _draw_optimum_rows(da: xr.DataArray) -> pd.DataFrame:
    """Section ``draw_optimum``: every draw's optimal share per training domain."""
    frame = da.to_dataframe().reset_index()
    return pd.DataFrame(
        {
            "section": "draw_optimum",
            "mixture": "draw " + frame["sample"].astype(str),
            "domain": frame["train_domain"],
            "statistic": "share",
            "value": frame[da.name],
        }
    )


def _fmt_interval(row, digits):
    return f"{row['mean']:.{digits}f} [{row['lower']:.{digits}f}, {row['upper']:.{digits}f}]"


def _records(frame: pd.DataFrame) -> list[dict]:
    recs = frame.to_dict(orient="records")
    return [
        {
            k: (
                None
                if isinstance(v, float) and not math.isfinite(v)
                else (v.item() if hasattr(v, "item") else v)
            )
            for k, v in r.items()
        }
        for r in recs
    ]
