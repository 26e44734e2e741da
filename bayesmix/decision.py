"""The decision report: which mixture to train the big run on, and how sure we are.

:func:`decide` runs the whole decision on a fitted posterior (or on :class:`LawDraws`): resolve
the validation-domain weights, the constraints and the baseline, choose the mixture
(:func:`bayesmix.optimize.minimize_objective`), compute every draw's own optimum
(:func:`bayesmix.optimize.draw_optima`), and compare recommendation and baseline draw by draw. Any
mixing law works: losses come from the posterior's law (:meth:`bayesmix.laws.Law.mean`), the
optimiser from its gradient; the report says whether the optimiser converged and, for a non-convex
law, how many of its starts reached the best value. The result is a :class:`DecisionReport` of
tidy DataFrames, printable as a table (:meth:`DecisionReport.to_text`) and saved as JSON or CSV
(:meth:`DecisionReport.save`).

Loss intervals have mass ``ci_prob`` over posterior draws, equal-tailed by default
(``ci_kind="hdi"``: highest density; :func:`bayesmix.optimize.credible_interval`).
"mean/median/lower/upper" describe the law's expected loss (uncertainty about the law); with a
Posterior the report adds ``pred_lower``/``pred_upper``, the posterior predictive interval of one
run's measured loss.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import xarray as xr

from bayesmix import errors
from bayesmix._compat import CI_PROB, PROGRESS, SEED, renamed_kwargs
from bayesmix.constraints import Constraints
from bayesmix.data import check_known_domains

if TYPE_CHECKING:  # scale imports optimize; imported lazily at run time
    from bayesmix.scale import ScaleShift
from bayesmix.optimize import (
    DEFAULT_PROB,
    LawDraws,
    Objective,
    as_law_draws,
    check_ci_kind,
    check_constraints,
    check_prob,
    credible_interval,
    draw_optima,
    minimize_objective,
    optima_dataarray,
    optimum_spread,
)

#: Name of the aggregate row in loss tables (as in ``Prediction.intervals``).
OVERALL = "overall"
REPORT_FORMAT = "bayesmix-decision/1"


# ------------------------------------------------------------------------------ inputs
def resolve_weights(
    eval_domains: Sequence[str],
    weights=None,
    target: str | None = None,
    *,
    allow_subset: bool = False,
) -> tuple[np.ndarray, str]:
    """Normalised weights (K,) over ``eval_domains`` and a one-line description.

    ``weights``: ``{domain: weight}``, a JSON file of that, or an array (K,); names match up to
    case and punctuation (:func:`bayesmix.mixtures.domain_weights`). ``target``: one validation
    domain gets all the weight. Neither: equal weights.
    """
    from bayesmix.mixtures import domain_weights

    eval_domains = list(eval_domains)
    if weights is not None and target is not None:
        raise errors.ObjectiveError("give either weights or a target domain, not both")
    if target is not None:
        check_known_domains([target], eval_domains, "validation")
        w = np.zeros(len(eval_domains))
        w[eval_domains.index(target)] = 1.0
        return w, f"target domain {target}"
    if weights is None:
        return np.full(
            len(eval_domains), 1.0 / len(eval_domains)
        ), f"equal weights over the {len(eval_domains)} validation domains"
    if isinstance(weights, (str, Path, Mapping)):
        w = domain_weights(weights, eval_domains, allow_subset=allow_subset)
        where = f" from {weights}" if isinstance(weights, (str, Path)) else ""
        return w, f"explicit weights{where}"
    w = np.asarray(weights, float).reshape(-1)
    if (
        w.shape != (len(eval_domains),)
        or not np.all(np.isfinite(w))
        or np.any(w < 0)
        or w.sum() <= 0
    ):
        raise errors.ObjectiveError(
            f"weights must be {len(eval_domains)} finite numbers >= 0, not all zero",
            hint=f"order: {', '.join(eval_domains)}",
        )
    return w / w.sum(), "explicit weights"


def resolve_baseline(
    train_domains: Sequence[str], baseline=None, *, source: str | None = None
) -> tuple[np.ndarray, str]:
    """The baseline mixture (M,) and a label. None: the uniform mixture.

    ``baseline``: ``{domain: share}`` (unnamed domains get 0; shares must sum to 1 within the
    run-table tolerance and are rescaled to exactly 1), an array (M,), or a JSON file holding
    such a mapping or a bayesmix decision report (its recommended mixture).
    """
    from bayesmix.mixtures import as_mixtures

    train_domains = list(train_domains)
    if baseline is None:
        return np.full(len(train_domains), 1.0 / len(train_domains)), "uniform"
    label = "given"
    if isinstance(baseline, (str, Path)):
        source = str(baseline)
        baseline, label = _read_baseline_file(Path(baseline)), f"from {baseline}"
    if isinstance(baseline, Mapping):
        check_known_domains(baseline, train_domains, "training", source=source)
        full = {d: baseline.get(d, 0.0) for d in train_domains}
        frame = as_mixtures({"baseline": full}, train_domains, source=source)
    else:
        frame = as_mixtures(np.asarray(baseline, float)[None, :], train_domains, source=source)
    return frame.to_numpy()[0], label


def _read_baseline_file(path: Path) -> Mapping:
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise errors.UnreadableFileError("file not found", source=str(path)) from None
    except (OSError, ValueError) as err:
        raise errors.UnreadableFileError(f"not JSON: {err}", source=str(path)) from None
    if isinstance(obj, Mapping) and obj.get("format") == REPORT_FORMAT:
        return {r["train_domain"]: r["share"] for r in obj["recommendation"]}
    if not isinstance(obj, Mapping) or not obj:
        raise errors.FormatError(
            "a baseline file must hold a JSON object {domain: share} or a bayesmix decision report",
            source=str(path),
        )
    return obj


# ------------------------------------------------------------------------------ the report
@dataclass
class DecisionReport:
    """Everything needed to decide, as tidy tables (shares are fractions, losses nats/token).

    Built by :func:`decide` (or read back by :func:`bayesmix.html_report.load_decision`);
    ``print(report)`` shows it as text, :meth:`save` writes JSON or CSV, :meth:`to_html` the
    HTML report.

    Parameters
    ----------
    recommendation : pandas.DataFrame
        train_domain, share, baseline, min_allowed, max_allowed.
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
        Mass of every interval (the ``ci_prob`` of :func:`decide`).
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
    #: The decision at the proxies' scale vs the target's (:mod:`bayesmix.scale`), when the law
    #: takes model size and tokens and a target scale was given.
    scale_shift: ScaleShift | None = None
    #: The scale the decision is made at ({"n_params": N, "tokens": D}), or empty.
    inputs: dict = field(default_factory=dict)
    #: Chance constraints and their exact probabilities (:mod:`bayesmix.guarantees`), or None.
    guarantees: pd.DataFrame | None = None
    unguaranteed_value: float | None = None
    #: Interval kind of every interval in the report: "eti" (equal-tailed) or "hdi".
    ci_kind: str = "eti"

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
        out = []
        if self.diagnostics_warning and not banner:
            out += [f"WARNING: {self.diagnostics_warning}", ""]
        elif self.diagnostics_warning:
            bar = "!" * 78
            out += [
                bar,
                f"WARNING: {self.diagnostics_warning}",
                "The intervals and the recommendation below may be wrong; refit (more "
                "draws, more tuning, or a better model) before relying on them.",
                bar,
                "",
            ]
        law = f"law {self.law}, " if self.law else ""
        out.append(f"Decision report ({self.source or 'posterior'}, {law}{self.n_samples} draws)")
        out.append(
            f"objective: {self.objective_description} [{self.objective}] = "
            f"{self.objective_value:.{digits}f}"
        )
        if self.optimizer_status:
            out.append(f"optimiser: {self.optimizer_status}")
        if self.scale_shift is not None:
            out.append(self.scale_shift.to_text())
        out.append(f"aggregate: {self.weights_description}; baseline: {self.baseline_label}")
        out.append("")

        rec = self.recommendation.copy()
        cols = {
            "train_domain": "train_domain",
            "share": "recommended",
            "baseline": "baseline",
            "min_allowed": "min",
            "max_allowed": "max",
        }
        table = rec[list(cols)].rename(columns=cols)
        if self.optimum_spread is not None:
            sp = self.optimum_spread.set_index("train_domain")
            table[f"per-draw optimum median [{pct}]"] = [
                f"{sp.at[d, 'median']:.3f} [{sp.at[d, 'lower']:.3f}, {sp.at[d, 'upper']:.3f}]"
                for d in table["train_domain"]
            ]
        out.append("Mixture (shares of training tokens)")
        out.append(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        out.append("")

        out.append(f"Loss (nats/token): posterior mean [{pct} interval of the expected loss]")
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
        out.append(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        if "pred_lower" in self.losses:
            o = loss.loc[("recommended", OVERALL)]
            out.append(
                f"{pct} predictive interval of one run's measured overall loss with the "
                f"recommendation: [{o['pred_lower']:.{digits}f}, "
                f"{o['pred_upper']:.{digits}f}]"
            )
        out.append("")
        if self.guarantees is not None and len(self.guarantees):
            out.append(
                "Guarantees (probability over posterior draws, checked exactly; no-worse "
                "is paired per draw against the baseline)"
            )
            g = self.guarantees
            out.append(
                pd.DataFrame(
                    {
                        "guarantee": g["guarantee"],
                        "required": g["prob_required"],
                        "achieved": g["prob_achieved"],
                        "met": np.where(g["met"], "yes", "NO"),
                    }
                ).to_string(index=False, float_format=lambda v: f"{v:.3f}")
            )
            if self.unguaranteed_value is not None:
                out.append(
                    f"price of the guarantees: objective {self.objective_value:.{digits}f}"
                    f" vs {self.unguaranteed_value:.{digits}f} without them"
                )
            out.append("")
        out.append(
            f"P(recommended beats baseline on the overall loss) = {self.p_beats_baseline:.3f}"
        )
        for note in self.notes:
            out.append(f"note: {note}")
        return "\n".join(out)

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
        parts = []

        def add(section, frame, domain_col, stats, mixture):
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
            parts.append(long)

        rec = self.recommendation
        add("mixture", rec, "train_domain", ["share"], "recommended")
        add(
            "mixture",
            rec.rename(columns={"baseline": "share", "share": "_"}),
            "train_domain",
            ["share"],
            "baseline",
        )
        add("mixture", rec, "train_domain", ["min_allowed", "max_allowed"], "constraint")
        add(
            "loss",
            self.losses,
            "eval_domain",
            ["weight", "mean", "median", "lower", "upper", "pred_lower", "pred_upper"],
            None,
        )
        add(
            "comparison",
            self.comparison,
            "eval_domain",
            ["improvement_mean", "improvement_lower", "improvement_upper", "p_better", "p_worse"],
            "recommended vs baseline",
        )
        if self.guarantees is not None and len(self.guarantees):
            g = self.guarantees.assign(met=self.guarantees["met"].astype(float))
            long = g.melt(
                id_vars=["guarantee", "domain"],
                value_vars=["bound", "prob_required", "prob_achieved", "met"],
                var_name="statistic",
                value_name="value",
            )
            parts.append(
                pd.DataFrame(
                    {
                        "section": "guarantee",
                        "mixture": "recommended",
                        "domain": long["domain"],
                        "statistic": long["statistic"],
                        "value": long["value"],
                        "text": long["guarantee"],
                    }
                )
            )
        if self.optimum_spread is not None:
            add(
                "optimum_spread",
                self.optimum_spread,
                "train_domain",
                ["mean", "median", "lower", "upper"],
                "per-draw optimum",
            )
        if include_draw_optima and self.draw_optima is not None:
            da = self.draw_optima
            frame = da.to_dataframe().reset_index()
            parts.append(
                pd.DataFrame(
                    {
                        "section": "draw_optimum",
                        "mixture": "draw " + frame["sample"].astype(str),
                        "domain": frame["train_domain"],
                        "statistic": "share",
                        "value": frame[da.name],
                    }
                )
            )
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
        parts.append(
            pd.DataFrame(
                {
                    "section": "meta",
                    "mixture": "",
                    "domain": "",
                    "statistic": [m[0] for m in meta],
                    "value": [m[1] for m in meta],
                    "text": [m[2] for m in meta],
                }
            )
        )
        out = pd.concat(parts, ignore_index=True)
        out["text"] = out["text"].fillna("") if "text" in out else ""
        return out[["section", "mixture", "domain", "statistic", "value", "text"]]

    def to_html(
        self,
        posterior,
        path: str | Path | None = None,
        *,
        ledger=None,
        ternary=None,
        force: bool = False,
    ):
        """The HTML report of ``posterior`` with this decision (:mod:`bayesmix.html_report`).

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
        from bayesmix import html_report

        options = {
            "decision": self,
            "ledger": ledger,
            "ternary": ternary,
            "ci_prob": self.prob,
            "ci_kind": self.ci_kind,
        }
        if path is None:
            return html_report.build_html(posterior, **options)
        return html_report.write_report(path, posterior, force=force, **options)

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
        _atomic_write(path, text)
        return path


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


def _atomic_write(path: Path, text: str) -> None:
    """The one atomic writer (mode 0666 & ~umask; WriteError on failure)."""
    from bayesmix.io import atomic_write_text

    atomic_write_text(path, text)


# ------------------------------------------------------------------------------ deciding
@renamed_kwargs(**CI_PROB, **SEED, **PROGRESS)
def decide(
    source,
    *,
    weights=None,
    target: str | None = None,
    constraints: Constraints | None = None,
    objective: Objective | str = "mean",
    baseline=None,
    ci_prob: float = DEFAULT_PROB,
    ci_kind: str = "eti",
    allow_subset: bool = False,
    per_draw: bool = True,
    n_starts: int | None = None,
    random_seed: int = 0,
    progressbar: bool = False,
    inputs: Mapping | None = None,
    proxy_inputs: Mapping | None = None,
    max_extrapolation: float = 10.0,
    guarantees=None,
) -> DecisionReport:
    """Choose the mixture to train on and report how sure the choice is.

    Parameters
    ----------
    source : Posterior or LawDraws
        A fitted posterior (any law) or draws of a law (:class:`bayesmix.optimize.LawDraws`).
    weights : mapping, path or array_like, optional
        How validation losses aggregate: ``{domain: weight}``, a JSON file of that, or an
        array (K,) (see :func:`resolve_weights`); default equal weights.
    target : str, optional
        One validation domain gets all the weight (instead of ``weights``).
    constraints : Constraints, optional
        Feasible mixtures over the training domains (default: the plain simplex).
    objective : str or Objective, default "mean"
        ``mean``, ``quantile:Q``, ``cvar:Q``, ``beat-baseline`` or ``minimax`` (the worst
        domain's expected change vs the baseline).
    baseline : mapping, array_like or path, optional
        The comparison mixture (default uniform, see :func:`resolve_baseline`).
    ci_prob : float, default 0.9
        Mass of every interval in the report (``prob`` is its deprecated name).
    ci_kind : {"eti", "hdi"}, default "eti"
        Equal-tailed or highest density intervals.
    allow_subset : bool, default False
        Allow ``weights`` naming only some validation domains.
    per_draw : bool, default True
        Also compute every draw's optimum (the spread of the optimum).
    n_starts : int, optional
        Optimiser starts (default: more for a non-convex law, see
        :func:`bayesmix.optimize.minimize_objective`).
    random_seed : int, default 0
        Seed of the optimiser's random starts and the predictive draws (``seed`` is its
        deprecated name).
    progressbar : bool, default False
        Print progress lines to stderr (``progress`` is its deprecated name).
    inputs : mapping, optional
        ``{"n_params": N, "tokens": D}`` of the run the mixture is for, when the law takes
        them; the report then also says whether the recommendation moves between the proxies'
        scale (``proxy_inputs``, default :func:`bayesmix.scale.proxy_scale`) and that target.
    proxy_inputs : mapping, optional
        The proxies' scale for that comparison.
    max_extrapolation : float, default 10
        A target more than this factor outside the fitted range is refused (less is noted).
    guarantees : sequence, optional
        Chance constraints per validation domain (:class:`bayesmix.guarantees.Guarantee` or
        strings ``"no-worse:DOMAIN=TOL@PROB"``, ``"max-loss:DOMAIN=VALUE@PROB"``; ``all`` for
        every domain), met exactly on the draws, else
        :class:`bayesmix.guarantees.GuaranteeError` names the binding one.

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
    >>> from bayesmix.optimize import LawDraws
    >>> runs, truth = bm.simulate(["web", "code", "books"], n_runs=12, random_seed=0)
    >>> rng = np.random.default_rng(1)
    >>> params = {k: truth[k] * rng.normal(1, 0.02, (100, *np.shape(truth[k])))
    ...           for k in ("m", "rho", "t")}
    >>> draws = LawDraws(params, runs.train_domains, runs.eval_domains)
    >>> cons = bm.Constraints.build(runs.train_domains, max_share={"code": 0.3})
    >>> rec = bm.decide(draws, constraints=cons, random_seed=0)
    >>> bool(cons.contains(rec.mixture.to_numpy()))
    True
    >>> round(float(rec.mixture.sum()), 6)
    1.0
    >>> rec.losses.columns.tolist()
    ['mixture', 'eval_domain', 'weight', 'mean', 'median', 'lower', 'upper']
    """

    def say(msg):
        if progressbar:
            print(f"[optimize] {msg}", file=sys.stderr, flush=True)

    prob = check_prob(ci_prob)
    check_ci_kind(ci_kind)
    objective = Objective.parse(objective)
    draws = as_law_draws(source)
    if inputs is not None:
        draws = dataclasses.replace(draws, inputs=inputs)
    posterior = None if isinstance(source, LawDraws) else source
    constraints = check_constraints(constraints, draws.train_domains)
    w, w_desc = resolve_weights(draws.eval_domains, weights, target, allow_subset=allow_subset)
    base, base_label = resolve_baseline(draws.train_domains, baseline)
    notes = []
    zero = [d for d, v in zip(draws.eval_domains, w) if v == 0]
    if zero and target is None:
        notes.append(f"weight 0 (not in the weights) for: {', '.join(zero)}")
    if not constraints.contains(base):
        notes.append("the baseline mixture is outside the constraints")
    if posterior is not None and draws.inputs:
        notes += posterior.check_scale(**draws.inputs, max_extrapolation=max_extrapolation)
    if posterior is not None:
        notes += _backtest_notes(posterior)

    optima_da, spread, starts = None, None, None
    if per_draw:
        say(f"per-draw optima of {draws.n_samples} draws")
        t0 = time.perf_counter()
        optima, ok = draw_optima(draws, constraints, w, random_seed=random_seed)
        say(f"per-draw optima done in {time.perf_counter() - t0:.2f} s")
        if not ok.all():
            notes.append(
                f"{int((~ok).sum())} of {len(ok)} per-draw optima did not converge "
                "(kept, feasible, possibly slightly off; the optimum spread may be "
                "a little wide)"
            )
        optima_da = optima_dataarray(optima, draws.train_domains)
        spread = optimum_spread(optima_da, ci_prob=prob, ci_kind=ci_kind)
        starts = optima.mean(axis=0)[None, :]
    say(f"optimising the {objective} objective")
    g_table, free_value = None, None
    if guarantees:
        from bayesmix.guarantees import minimize_guaranteed
        from bayesmix.optimize import Optimum

        say("with guarantees (chance constraints, checked exactly on the draws)")
        got = minimize_guaranteed(
            draws,
            constraints,
            w,
            objective,
            guarantees=guarantees,
            baseline=base,
            extra_starts=starts,
            random_seed=random_seed,
            n_starts=n_starts or 4,
        )
        g_table, free_value = got.table(), got.unguaranteed_value
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
    else:
        best = minimize_objective(
            draws,
            constraints,
            w,
            objective,
            baseline=base if objective.uses_baseline else None,
            n_starts=n_starts,
            extra_starts=starts,
            random_seed=random_seed,
        )
        status = (
            best.status()
            if objective.kind != "minimax"
            else "SLSQP on the epigraph form (exact max over validation domains)"
        )
    if not best.converged:
        notes.append(f"the optimiser reported: {best.message} (best feasible start kept)")
    if best.fragile:
        notes.append(
            f"law {draws.law.name!r} is not convex and only {best.n_agree} of "
            f"{best.n_starts} optimiser starts reached the best value (the others "
            "stopped at local optima): the recommendation may be fragile; rerun with "
            "more starts (--starts) and a few seeds to check it"
        )

    if posterior is not None:
        rec_mix = pd.DataFrame([best.mixture], index=["recommended"], columns=draws.train_domains)
        notes += posterior.mixture_range().notes(rec_mix, "the recommended mixture")
    recommendation = pd.DataFrame(
        {
            "train_domain": list(draws.train_domains),
            "share": best.mixture,
            "baseline": base,
            "min_allowed": constraints.lower,
            "max_allowed": constraints.upper,
        }
    )
    losses, comparison, p_beat = _compare(
        draws, w, best.mixture, base, prob, ci_kind, posterior, random_seed, max_extrapolation
    )
    shift = None
    if draws.inputs and {"n_params", "tokens"} <= set(draws.law.inputs):
        from bayesmix.scale import proxy_scale, scale_shift

        if proxy_inputs is None and posterior is not None:
            proxy_inputs = proxy_scale(posterior)
        if proxy_inputs is not None:
            say("comparing with the decision at the proxies' scale")
            shift = scale_shift(
                draws,
                constraints,
                w,
                target=draws.inputs,
                proxy=proxy_inputs,
                ci_prob=prob,
                random_seed=random_seed,
            )
    say("done")
    return DecisionReport(
        scale_shift=shift,
        inputs=dict(draws.inputs),
        recommendation=recommendation,
        losses=losses,
        comparison=comparison,
        optimum_spread=spread,
        draw_optima=optima_da,
        p_beats_baseline=p_beat,
        objective=str(objective),
        objective_description=objective.describe(),
        objective_value=best.value,
        weights_description=w_desc,
        baseline_label=base_label,
        prob=prob,
        n_samples=draws.n_samples,
        constraints=constraints,
        diagnostics_warning=draws.diagnostics_warning,
        source=draws.source,
        notes=notes,
        law=draws.law.name,
        optimizer_status=status,
        guarantees=g_table,
        unguaranteed_value=free_value,
        ci_kind=ci_kind,
    )


def _backtest_notes(posterior) -> list[str]:
    """The backtest verdict and learned extrapolation error stored with a target-scale
    posterior (:mod:`bayesmix.backtesting`), or a warning when it extrapolates without one."""
    from bayesmix.extrapolation import stored_backtest as stored

    bt = stored(posterior)
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


def _compare(draws: LawDraws, w, rec, base, prob, ci_kind, posterior, seed, max_extrapolation=10.0):
    """Loss intervals of both mixtures per domain and overall, and their paired comparison."""
    mixes = np.vstack([rec, base])

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
            max_extrapolation=max_extrapolation,
            **draws.inputs,
        )  # decide() notes extrapolation
    if pred is not None and posterior.extrapolation is not None:
        # a learned extrapolation error: the expected losses carry it (the per-mixture part
        # widens the improvement; the part shared by both mixtures cancels in it)
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
