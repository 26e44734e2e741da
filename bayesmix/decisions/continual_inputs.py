"""Continual pre-training's inputs: the question (:class:`ContinualProblem`), what "the original
domain's loss" is, its value at the start, and the line of mixtures the critical share moves
along.

The start loss is not in a posterior (a fit keeps one record per run, the fitted checkpoint): it
comes from a run table's step-0 records or is given as a number. Used by
:func:`bayesmix.decisions.continual.critical_share` and, as a chance constraint, by
:func:`bayesmix.decisions.guarantees.guaranteed_critical_share`. Errors name the Python
parameter at fault (``start_loss=``; the CLI shows its flag).
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from bayesmix import errors
from bayesmix.data.mixtures import domain_weights
from bayesmix.data.table import RunTable, normalise_name
from bayesmix.decisions.inputs import problem_from

#: Largest difference between runs' step-0 losses still read as one starting checkpoint (nats).
START_AGREEMENT = 1e-6


@dataclass(frozen=True)
class ContinualProblem:
    """How much of a new domain can continued training add before the original domain's loss
    rises above its start (plus ``tolerance``)? Checked once, when built; errors name the
    parameter (``tolerance=-1 ...``; the CLI shows its flag).

    ``original``: with ``weights`` ({validation domain: weight} or a JSON file), the training
    domain whose loss is that weighted aggregate; without, a validation domain
    (:func:`original_loss_weights`). ``new``: the training domain continued training adds.
    ``start_loss``: the original loss at the start (nats per token), or ``runs``: a run table
    with step-0 records (neither: step-0 records of the posterior's fit data). ``tolerance``:
    nats the loss may rise above the start; ``prob``: mass of the intervals, and the required
    probability of the chance-constrained share; ``other_shares``: the remaining training
    domains' fixed shares (default 0).
    """

    original: str | None = None
    new: str | None = None
    start_loss: float | None = None
    runs: RunTable | None = None
    weights: Any = None
    tolerance: float = 0.0
    prob: float = 0.9
    other_shares: Mapping[str, float] | None = None

    def __post_init__(self):
        for name in ("original", "new"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise errors.OptionError(
                    f"{name}={getattr(self, name)!r} is not a domain name", param=name
                )
        if not (_real(self.prob) and 0 < self.prob < 1):
            raise errors.OptionError(f"prob={self.prob!r} is not between 0 and 1", param="prob")
        if not (_real(self.tolerance) and math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise errors.OptionError(
                f"tolerance={self.tolerance!r} is not a number of nats >= 0", param="tolerance"
            )
        if self.start_loss is None:
            return
        if self.runs is not None:
            raise errors.OptionError(
                f"start_loss={self.start_loss!r} was given with the runs: give either one",
                param="start_loss",
            )
        if not (_real(self.start_loss) and math.isfinite(self.start_loss) and self.start_loss > 0):
            raise errors.OptionError(
                f"start_loss={self.start_loss!r} is not a positive number of nats",
                param="start_loss",
            )


def _real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def original_loss_weights(
    posterior, original: str, new: str, weights=None
) -> tuple[np.ndarray, str, str, str]:
    """What "the original domain's loss" means, and which training domain gives up share.

    Returns (weights (K,) over the posterior's validation domains, summing to 1; the original
    training domain; a short name of the loss; a one-line description of it). With
    ``weights`` ({domain: weight} or a JSON file, e.g. the Pile token shares) ``original`` must
    be a training domain and its loss is the weighted aggregate. Without, ``original`` must be
    a validation domain; the training domain giving up share is the one of the same name, or
    else the only training domain besides ``new``.
    """
    train, evals = list(posterior.train_domains), list(posterior.eval_domains)
    if new not in train:
        raise errors.DomainNameError(
            f"new={new!r} is not a training domain of the posterior",
            hint=suggest(new, train),
            param="new",
        )
    if weights is not None:
        if original not in train:
            raise errors.DomainNameError(
                f"original={original!r} is not a training domain of the posterior (with "
                "weights, the original domain is the training domain whose aggregate loss the "
                "weights define)",
                hint=suggest(original, train),
                param="original",
            )
        w = domain_weights(weights, evals)
        where = f" from {weights}" if isinstance(weights, (str, Path)) else ""
        n = int((w > 0).sum())
        name = f"{original} aggregate"
        label = f"{original} (weighted over {n} validation domains{where})"
        giver = original
    else:
        if original not in evals:
            if original in train:
                raise errors.DomainNameError(
                    f"original={original!r} is a training domain without a validation domain "
                    "of that name",
                    hint="give the weights of its validation domains, or name one validation "
                    "domain",
                    param="original",
                )
            raise errors.DomainNameError(
                f"original={original!r} is neither a validation nor a training domain of the "
                "posterior",
                hint=suggest(original, evals + train),
                param="original",
            )
        w = np.zeros(len(evals))
        w[evals.index(original)] = 1.0
        name = label = original
        same = [d for d in train if normalise_name(d) == normalise_name(original)]
        others = [d for d in train if d != new]
        if same:
            giver = same[0]
        elif len(others) == 1:
            giver = others[0]
        else:
            raise errors.DomainNameError(
                f"original={original!r} is a validation domain with no training domain of the "
                f"same name, and there are {len(train)} training domains: which one gives up "
                "share is unclear",
                hint=f"name the training domain and give weights with all weight on {original!r}",
                param="original",
            )
    if giver == new:
        raise errors.DomainNameError(
            f"new={new!r} is the original domain too (the same training domain)",
            hint="the new domain is the one continued training adds",
            param="new",
        )
    return w, giver, name, label


def suggest(name: str, known) -> str:
    """A hint: the closest known name, or the list of known names."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"


def start_loss_from_runs(runs: RunTable, weights: np.ndarray, eval_domains) -> float:
    """The original loss at the starting checkpoint: the step-0 records of ``runs``, weighted
    over ``eval_domains`` with ``weights`` (K,). Every run's step-0 record must agree (one
    checkpoint: within :data:`START_AGREEMENT` nats)."""
    hint = "give start_loss=X (nats per token) instead"
    if not runs.has_steps:
        raise errors.FormatError(
            "the runs have no steps, so no step-0 (starting checkpoint) records",
            source=runs.source,
            column="step",
            hint=hint,
            param="start_loss",
        )
    tidy = runs.to_tidy()
    rec = tidy[tidy["step"] == 0]
    if rec.empty:
        steps = sorted(tidy["step"].dropna().unique())
        raise errors.EmptyInputError(
            f"no step-0 records (the starting checkpoint); the first step is {steps[0]:g}",
            source=runs.source,
            column="step",
            hint=hint,
            param="start_loss",
        )
    used = [(d, wi) for d, wi in zip(eval_domains, weights) if wi > 0]
    for d, _ in used:
        if d not in runs.eval_domains:
            raise errors.DomainNameError(
                f"no loss of validation domain {d!r}",
                source=runs.source,
                column=f"loss.{d}",
                hint="the runs file must be the one the posterior was fitted to",
            )
    values = rec[[f"loss.{d}" for d, _ in used]].to_numpy(dtype=float)
    loss = values @ np.array([wi for _, wi in used])
    if np.isnan(loss).any():
        i = int(np.flatnonzero(np.isnan(loss))[0])
        d = used[int(np.flatnonzero(np.isnan(values[i]))[0])][0]
        raise errors.MissingValueError(
            "step-0 loss is missing",
            source=runs.source,
            run=str(rec["run"].iloc[i]),
            column=f"loss.{d}",
            hint=hint,
            param="start_loss",
        )
    spread = float(loss.max() - loss.min())
    if spread > START_AGREEMENT:
        raise errors.FormatError(
            f"step-0 losses differ between runs by {spread:.3g} nats: "
            "they do not start from one checkpoint",
            source=runs.source,
            column="step",
            hint=hint,
            param="start_loss",
        )
    return float(loss.mean())


def continual_problem(problem: ContinualProblem | None, given: Mapping) -> ContinualProblem:
    """``problem``, or the :class:`ContinualProblem` whose fields a function took as keywords:
    ``given`` is that function's ``locals()`` on entry, read by the problem's field names (None
    ones left out; the problem and its fields at once: OptionError naming ``problem=``)."""
    values = {f.name: given[f.name] for f in fields(ContinualProblem)}
    return problem_from(problem, values, ContinualProblem)


def original_start(posterior, problem: ContinualProblem, w) -> tuple[float, str]:
    """The original loss at the start (nats per token) and where it came from: the problem's
    ``start_loss``, else the step-0 records of its ``runs``, else those of the posterior's fit
    data (``w`` (K,): the original loss's weights over the validation domains)."""
    if problem.start_loss is not None:
        return float(problem.start_loss), "given"
    runs = problem.runs
    if runs is not None:
        if set(runs.train_domains) != set(posterior.train_domains):
            raise errors.DomainNameError(
                f"runs= trains on {', '.join(runs.train_domains)}, the posterior on "
                f"{', '.join(posterior.train_domains)}: another experiment's runs cannot give "
                "this one's start loss",
                source=runs.source,
                hint="give the runs this posterior was fitted to, or start_loss=X",
                param="runs",
            )
        value = start_loss_from_runs(runs, w, posterior.eval_domains)
        return value, f"step 0 of {runs.source}" if runs.source else "step 0 of the runs"
    fit = posterior.fit_data()
    steps = fit.column("step")
    if steps is not None and (steps == 0).any() and (steps > 0).any():
        return start_loss_from_runs(fit, w, posterior.eval_domains), "step 0 of the fit data"
    at = f" (step {steps.max():g})" if steps is not None else ""
    raise errors.OptionError(
        f"no start loss: the posterior keeps only the records it was fitted to{at}",
        hint="give the runs with their step-0 records, or start_loss=X (nats per token)",
        param="start_loss",
    )


def share_line(train, giver: str, new: str, other_shares) -> tuple[np.ndarray, np.ndarray, float]:
    """Base mixture and direction: r(x) = base + x * direction, x in [0, x_max]."""
    other = dict(other_shares or {})
    for d, s in other.items():
        if d not in train:
            raise errors.DomainNameError(
                f"other_shares={other!r}: {d!r} is not a training domain",
                hint=suggest(d, train),
                param="other_shares",
            )
        if d in (giver, new):
            raise errors.OptionError(
                f"other_shares={other!r}: {d!r} is the original or the new domain; "
                "only the remaining training domains are held fixed",
                param="other_shares",
            )
        if not (np.isfinite(s) and 0 <= s <= 1):
            raise errors.OptionError(
                f"other_shares={other!r}: the share of {d!r} is not in [0, 1]", param="other_shares"
            )
    x_max = 1.0 - float(sum(other.values()))
    if x_max <= 0:
        raise errors.OptionError(
            f"other_shares={other!r} sum to {1 - x_max:g}: nothing is left for the "
            "original and the new domain",
            param="other_shares",
        )
    base = np.array([other.get(d, 0.0) for d in train], float)
    base[train.index(giver)] = x_max
    direction = np.zeros(len(train))
    direction[train.index(new)] = 1.0
    direction[train.index(giver)] = -1.0
    return base, direction, x_max


def law_inputs(posterior) -> dict:
    """Model size / tokens of the fitted runs' last checkpoints, for laws that take them (a
    law over training tokens is fitted to every checkpoint; the critical share is the one at
    the end of continued training). One value each."""
    out = {}
    fit = posterior.fit_data().final()
    for key in posterior.law.inputs:
        if key == "r":
            continue
        col = fit.column(key)
        values = None if col is None else np.unique(col.to_numpy(dtype=float))
        if values is None or len(values) != 1:
            raise errors.OptionError(
                f"law {posterior.law.name!r} takes {key} and the fitted "
                f"runs do not share one value of it",
                hint="fit one model size at one step",
            )
        out[key] = float(values[0])
    return out
