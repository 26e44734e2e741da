"""A decision's inputs from what the user gives: validation-domain weights, the baseline mixture,
and a problem object or its fields given as keywords (:func:`problem_from`).

Names match up to case and punctuation (:mod:`bayesmix.data.mixtures`); a baseline may be read
from a JSON file of shares or from a saved decision report (:data:`REPORT_FORMAT`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from bayesmix import errors
from bayesmix.data.mixtures import as_mixtures, domain_weights
from bayesmix.data.table import check_known_domains

REPORT_FORMAT = "bayesmix-decision/1"


def resolve_weights(
    eval_domains: Sequence[str],
    weights=None,
    target: str | None = None,
    *,
    allow_subset: bool = False,
) -> tuple[np.ndarray, str]:
    """Normalised weights (K,) over ``eval_domains`` and a one-line description.

    ``weights``: ``{domain: weight}``, a JSON file of that, or an array (K,); names match up to
    case and punctuation (:func:`bayesmix.data.mixtures.domain_weights`). ``target``: one validation
    domain gets all the weight. Neither: equal weights.
    """

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


def problem_from(problem, fields: Mapping, kind: type):
    """``problem`` (an instance of ``kind``, e.g. a
    :class:`~bayesmix.decisions.problem.DecisionProblem`), or the ``kind`` its keyword
    ``fields`` describe (a function's convenience keywords; None ones left out). Both at once,
    or a ``problem`` of another type, is an OptionError naming ``problem=``."""
    fields = {k: v for k, v in fields.items() if v is not None}
    if problem is None:
        return kind(**fields)
    if not isinstance(problem, kind):
        raise errors.OptionError(
            f"problem={type(problem).__name__} is not a {kind.__name__}",
            hint=f"build one with {kind.__name__}(...) or pass its fields as keywords",
            param="problem",
        )
    if fields:
        raise errors.OptionError(
            f"problem= was given with its fields {', '.join(sorted(fields))}: give one",
            hint="dataclasses.replace(problem, ...) changes fields of a problem",
            param="problem",
        )
    return problem
