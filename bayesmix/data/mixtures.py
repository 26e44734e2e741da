"""Mixtures to evaluate and validation-domain weights, coerced and checked against a posterior.

``as_mixtures`` accepts a DataFrame (columns = training domains or ``mix.<domain>``, optional
``mixture``/``run`` id column), a mapping ``{name: {domain: share}}``, or an array (n, M); it
returns a DataFrame (index ``mixture``, columns training domains) whose rows sum to 1.
``domain_weights`` turns ``{domain: weight}`` (e.g. Pile token shares) into a vector over the
posterior's validation domains, matching names up to case and punctuation (two keys that match
one name, e.g. ``web`` and ``WEB``, are an error); weights of any finite size are normalised
without overflow. A JSON mapping of mixtures must give every training domain a share, like the
CSV form.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.data.table import MIX_PREFIX, SUM_TOLERANCE, normalise_name


def as_mixtures(
    obj,
    train_domains: Sequence[str],
    *,
    source: str | None = None,
    tolerance: float = SUM_TOLERANCE,
) -> pd.DataFrame:
    """Validated mixtures as a DataFrame (index ``mixture``, columns ``train_domains``)."""
    train_domains = list(train_domains)
    if isinstance(obj, pd.DataFrame):
        df = _from_frame(obj)
    elif isinstance(obj, Mapping):
        df = _from_mapping(obj, train_domains, source)
    else:
        df = _from_array(obj, train_domains, source)
    if len(df) == 0:
        raise errors.EmptyInputError("no mixtures given", source=source)
    for c in df.columns:
        _check_known_column(c, train_domains, source)
    missing = [d for d in train_domains if d not in df.columns]
    if missing:
        raise errors.FormatError(
            f"no share given for training domain {missing[0]!r}",
            source=source,
            column=missing[0],
            hint="give every training domain a share (0 if unused)",
        )
    df = df[train_domains]
    df.index = [str(i) for i in df.index]
    df.index.name = "mixture"
    df.columns.name = "train_domain"
    if df.index.duplicated().any():
        raise errors.DuplicateRunError(
            f"mixture {df.index[df.index.duplicated()][0]!r} appears twice", source=source
        )
    arr = _shares(df, source, tolerance)
    return pd.DataFrame(arr / arr.sum(axis=1)[:, None], index=df.index, columns=df.columns)


def _from_frame(obj: pd.DataFrame) -> pd.DataFrame:
    """A DataFrame's share columns (``mix.`` prefixes dropped), indexed by its ``mixture`` or
    ``run`` column; losses and run metadata (size, step, status...) left out."""
    df = obj.copy()
    df.columns = [str(c) for c in df.columns]
    id_col = next((c for c in ("mixture", "run") if c in df.columns), None)
    if id_col:
        df = df.set_index(id_col)
    df.columns = [c[len(MIX_PREFIX) :] if c.startswith(MIX_PREFIX) else c for c in df.columns]
    df = df[[c for c in df.columns if not c.startswith("loss.")]]
    for c in ("n_params", "step", "tokens", "round", "strategy", "status"):
        if c in df.columns:
            df = df.drop(columns=c)
    return df


def _from_mapping(obj: Mapping, train_domains: list[str], source) -> pd.DataFrame:
    """``{name: {domain: share}}`` as a DataFrame; every training domain needs a share."""
    rows = {}
    for name, shares in obj.items():
        if not isinstance(shares, Mapping):
            raise errors.FormatError(
                f"mixture {name!r} is not an object {{domain: share}}",
                source=source,
                hint='write {"name": {"domain": share, ...}, ...}',
            )
        for key in shares:
            _check_known_column(str(key), train_domains, source)
        absent = [d for d in train_domains if d not in shares]
        if absent:  # like a missing column or an empty cell in the CSV form
            raise errors.MissingValueError(
                f"mixture {str(name)!r} gives no share for training domain {absent[0]!r}",
                source=source,
                run=str(name),
                column=absent[0],
                hint="give every training domain a share (0 if unused)",
            )
        rows[str(name)] = dict(shares)
    return pd.DataFrame.from_dict(rows, orient="index")


def _from_array(obj, train_domains: list[str], source) -> pd.DataFrame:
    """An (n, M) or (M,) array of shares in ``train_domains`` order, rows named ``mix<i>``."""
    arr = np.atleast_2d(np.asarray(obj, dtype=float))
    if arr.shape[-1] != len(train_domains):
        raise errors.FormatError(
            f"mixtures have {arr.shape[-1]} shares but the posterior has "
            f"{len(train_domains)} training domains",
            source=source,
            hint=f"order: {', '.join(train_domains)}",
        )
    return pd.DataFrame(arr, columns=train_domains, index=[f"mix{i}" for i in range(len(arr))])


def _shares(df: pd.DataFrame, source, tolerance: float) -> np.ndarray:
    """The shares as floats (n, M): numbers, present, >= 0, each row summing to 1 within
    ``tolerance``."""
    values = df.apply(pd.to_numeric, errors="coerce")
    bad = values.isna() & df.notna()
    if bad.to_numpy().any():
        i, j = np.argwhere(bad.to_numpy())[0]
        raise errors.NonNumericError(
            f"{df.iat[i, j]!r} is not a number",
            source=source,
            run=df.index[i],
            column=df.columns[j],
        )
    arr = values.to_numpy(dtype=float)
    if np.isnan(arr).any():
        i, j = np.argwhere(np.isnan(arr))[0]
        raise errors.MissingValueError(
            "share is missing",
            source=source,
            run=df.index[i],
            column=df.columns[j],
            hint="write 0 for an unused domain",
        )
    if (arr < 0).any():
        i, j = np.argwhere(arr < 0)[0]
        raise errors.NegativeProportionError(
            f"share {arr[i, j]:g} is negative", source=source, run=df.index[i], column=df.columns[j]
        )
    sums = arr.sum(axis=1)
    if (np.abs(sums - 1) > tolerance).any():
        i = int(np.flatnonzero(np.abs(sums - 1) > tolerance)[0])
        raise errors.ProportionSumError(
            f"shares sum to {sums[i]:.6g}, not 1", source=source, run=df.index[i]
        )
    return arr


def _check_known_column(name: str, train_domains: list[str], source: str | None) -> None:
    if name not in train_domains:
        close = difflib.get_close_matches(name, train_domains, n=1, cutoff=0.6)
        raise errors.DomainNameError(
            f"unknown training domain {name!r}",
            source=source,
            column=name,
            hint=f"did you mean {close[0]!r}?"
            if close
            else f"the posterior's domains: {', '.join(train_domains)}",
        )


def read_mixtures(path: str | Path, train_domains: Sequence[str]) -> pd.DataFrame:
    """Mixtures from a CSV/Parquet/JSON file (see :func:`as_mixtures` for the layout)."""
    path = Path(path)
    try:
        if path.suffix == ".json":
            obj = json.loads(path.read_text())
            df = obj if isinstance(obj, Mapping) else pd.DataFrame(obj)
        elif path.suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path)
    except FileNotFoundError:
        raise errors.UnreadableFileError("file not found", source=str(path)) from None
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise errors.UnreadableFileError(
            f"cannot read mixtures: {err}".splitlines()[0], source=str(path)
        ) from None
    return as_mixtures(df, train_domains, source=str(path))


def domain_weights(
    weights, eval_domains: Sequence[str], *, allow_subset: bool = False, source: str | None = None
) -> np.ndarray:
    """Normalised weights (K,) over ``eval_domains`` from ``{domain: weight}`` or a JSON path.

    Names match up to case and punctuation (``Pile-CC`` = ``pile_cc``). A weighted domain the
    posterior lacks is an error unless ``allow_subset``: then the weights are renormalised over
    the domains present. Posterior domains without a weight get weight 0.
    """
    if isinstance(weights, (str, Path)):
        source = str(weights)
        try:
            weights = json.loads(Path(weights).read_text())
        except FileNotFoundError:
            raise errors.UnreadableFileError("file not found", source=source) from None
        except (OSError, ValueError) as err:
            raise errors.UnreadableFileError(
                f"not a JSON object of weights: {err}", source=source
            ) from None
    if not isinstance(weights, Mapping) or not weights:
        raise errors.FormatError(
            "weights must be a non-empty mapping {domain: weight}", source=source
        )
    index = {normalise_name(d): i for i, d in enumerate(eval_domains)}
    spelt: dict[str, str] = {}
    for name in weights:
        key = normalise_name(str(name))
        if key in spelt:
            raise errors.DomainNameError(
                f"weights name {spelt[key]!r} and {str(name)!r}, which differ only in case or "
                "punctuation",
                source=source,
                column=str(name),
                hint="give each validation domain one weight",
            )
        spelt[key] = str(name)
    out = np.zeros(len(eval_domains))
    for name, w in weights.items():
        try:
            w = float(w)
        except (TypeError, ValueError):
            raise errors.NonNumericError(
                f"weight {w!r} is not a number", source=source, column=str(name)
            ) from None
        if not np.isfinite(w) or w < 0:
            raise errors.FormatError(
                f"weight {w:g} must be finite and >= 0", source=source, column=str(name)
            )
        i = index.get(normalise_name(str(name)))
        if i is None:
            if allow_subset:
                continue
            close = difflib.get_close_matches(str(name), list(eval_domains), n=1, cutoff=0.6)
            raise errors.DomainNameError(
                f"weighted domain {name!r} is not a validation domain of the posterior",
                source=source,
                column=str(name),
                hint=(f"did you mean {close[0]!r}? " if close else "")
                + "or pass allow_subset=True to weight the domains it has",
                param="allow_subset",
            )
        out[i] = w
    if not out.max() > 0:
        raise errors.FormatError(
            "no positive weight on any validation domain of the posterior", source=source
        )
    out = out / out.max()  # first to at most 1: a sum of huge weights would overflow to inf
    return out / out.sum()
