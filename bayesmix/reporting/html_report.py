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
   recommendation of each round's posterior and its interval;

and, after 4, the downstream tasks of a ``tasks`` posterior (per-task changes and the trade-offs
between task families, :mod:`~bayesmix.reporting.sections_tasks`) and the backtests stored
with a target-scale posterior. This module assembles the
page; :mod:`~bayesmix.reporting.sections_checks` (1, 2, backtests),
:mod:`~bayesmix.reporting.sections_law` (3, 4) and :mod:`~bayesmix.reporting.sections_decision`
(5, 6) build the sections from one :class:`~bayesmix.reporting.view.View`, with the HTML pieces
of :mod:`~bayesmix.reporting.figures`.

Figures scale with the number of domains (small multiples wrap, heatmap cells shrink,
annotations are dropped when cells get small), so 17 x 13 and 64 training domains stay
readable.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmix import __version__, errors
from bayesmix._compat import CI_PROB, renamed_kwargs
from bayesmix.data.constraints import Constraints
from bayesmix.decisions.decision import DecisionReport
from bayesmix.decisions.inputs import REPORT_FORMAT
from bayesmix.decisions.optimize import optima_dataarray
from bayesmix.io import atomic_write_text, check_output_path
from bayesmix.posterior.intervals import check_ci_kind, check_prob
from bayesmix.posterior.posterior import Posterior
from bayesmix.reporting.figures import esc
from bayesmix.reporting.sections_checks import section_backtest, section_fit, section_ppc
from bayesmix.reporting.sections_decision import section_decision, section_ledger
from bayesmix.reporting.sections_law import section_heatmap, section_simplex, ternary_domains
from bayesmix.reporting.sections_tasks import section_tasks
from bayesmix.reporting.view import View


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
    view = View(post, decision, ci_prob, ci_kind)
    abc = ternary_domains(ternary, view)

    sections = [
        section_fit(view),
        section_ppc(view),
        section_heatmap(view),
        section_simplex(view, abc),
    ]
    for extra in (section_tasks(view), section_backtest(view)):
        if extra is not None:
            sections.append(extra)
    if decision is not None:
        sections.append(section_decision(view))
    if ledger is not None:
        sections.append(section_ledger(view, ledger))
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
            accuracy_changes=_frame_or_none(obj.get("accuracy_changes")),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise errors.FormatError(
            f"damaged decision report ({type(err).__name__}: {err})", source=str(path)
        ) from None


def _frame_or_none(records) -> pd.DataFrame | None:
    return None if records is None else pd.DataFrame(records)


def _check_same_domains(decision, post) -> None:
    got = [str(d) for d in decision.recommendation["train_domain"]]
    if got != list(post.train_domains):
        raise errors.DomainNameError(
            "the decision's training domains differ from the posterior's",
            source=decision.source,
            hint=f"posterior: {', '.join(post.train_domains)}",
        )


# ------------------------------------------------------------------------------ the page
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


def _page(title: str, view: View, sections: list[tuple[str, str, str]]) -> str:
    post = view.post
    nav = " ".join(f'<a href="#{key}">{esc(head)}</a>' for key, head, _ in sections)
    warn = ""
    if post.diagnostics_warning:
        warn = (
            f'<p class="warn"><b>The fit failed its diagnostics gate:</b> '
            f"{esc(post.diagnostics_warning)}. Predictions and decisions below may be "
            "wrong; refit with more tuning or draws.</p>"
        )
    body = "\n".join(
        f'<section id="{key}"><h2>{esc(head)}</h2>\n{content}\n</section>'
        for key, head, content in sections
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{esc(title)}</h1>\n"
        f"<p>Law <b>{esc(post.law.name)}</b> ({esc(post.law.description)}), model "
        f"<b>{esc(post.spec.name)}</b>; {len(view.train)} training x {len(view.eval)} "
        f"validation domains; {post.fit_data().n_runs} runs; {post.n_samples} posterior "
        f"draws. Losses in nats per token; intervals are equal-tailed with mass "
        f"{view.prob:.0%}. bayesmix {__version__}.</p>\n{warn}\n<nav>{nav}</nav>\n"
        f"{body}\n</body>\n</html>\n"
    )


def figure_names(html_text: str) -> list[str]:
    """The ``data-figure`` names in a report (for tests and checks)."""
    import re

    return re.findall(r'data-figure="([^"]+)"', html_text)


__all__: Sequence[str] = ["build_html", "write_report", "load_decision", "figure_names"]
