"""The run table: the one input structure of bayesmix.

A proxy run has an id, proportions over named training domains, optionally a model size
(``n_params``, non-embedding parameters) and a training amount (``step`` and/or ``tokens``), and
losses (nats per token) on named validation domains. A run may have several checkpoints: one
record per (run, step).

The documented tidy layout (CSV, Parquet or a pandas DataFrame), one row per record::

    run, [n_params], [step], [tokens], mix.<train_domain>..., loss.<eval_domain>...

``mix.*`` columns are proportions (each record sums to 1 within ``SUM_TOLERANCE``); ``loss.*``
cells may be empty (missing losses stay missing, they are never filled in). ``step`` and
``tokens`` may be 0: the checkpoint a run starts from (continual pre-training); drop such records
before fitting a power law in steps or tokens. Optional columns describe each run's
learning-rate schedule (``schedule``, ``total_steps``, ``warmup_steps``, ``decay_steps``,
``min_lr_ratio``; :mod:`bayesmix.schedules`).

One plausibility rule for losses, in every loader and in ``validate`` (:func:`check_loss`):

* an empty cell or ``nan`` (any spelling pandas reads as missing: ``NaN``, ``NA``, ``null``...)
  is a **missing** loss: kept as NaN, left out of the likelihood;
* ``inf`` / ``-inf`` is an **error** (a diverged or broken evaluation, not an unknown value);
* a loss must be ``> 0`` (cross-entropy) and ``<= max_loss`` (default :data:`MAX_LOSS`, 100
  nats per token; raise it with ``max_loss=`` or the CLI's ``--max-loss``, up to
  :data:`MAX_LOSS_LIMIT`). A uniform guess over a 50k-token vocabulary costs ln(50257) = 10.8
  nats per token and untrained models start near it, so a loss above 100 is a unit mistake
  (a sum over tokens, bits times a factor, a perplexity) or a corrupt cell.

Domain names may not be empty, have surrounding spaces, or contain ``/`` (NetCDF), ``,`` or
``=`` (the CLI's ``--max-share NAME=VALUE,NAME=VALUE`` lists could not name them).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from bayesmix import errors, schedules

MIX_PREFIX = "mix."
LOSS_PREFIX = "loss."
META_COLUMNS = ("n_params", "step", "tokens")
#: Largest allowed |sum(proportions) - 1| before a record is rejected (RegMix rounds to 3 decimals,
#: so its rows are off by up to about 0.004). Pass ``renormalize=True`` to accept and rescale.
SUM_TOLERANCE = 0.01
#: Default plausibility bound on a loss, nats per token (see the module docstring).
MAX_LOSS = 100.0
#: Largest bound a user may set: beyond it the likelihood's arithmetic is no longer sound.
MAX_LOSS_LIMIT = 1e6
#: Characters a domain name may not hold, with the reason (named in the error).
_FORBIDDEN_NAME_CHARS = {
    "/": "NetCDF names cannot hold it",
    ",": "--max-share NAME=VALUE,NAME=VALUE lists could not name it",
    "=": "--max-share NAME=VALUE lists could not name it",
}


def check_max_loss(value, option: str = "max_loss") -> float:
    """``value`` as a float when it is a usable loss bound (finite, > 0, <= MAX_LOSS_LIMIT)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not (math.isfinite(v) and 0 < v <= MAX_LOSS_LIMIT):
        raise errors.OptionError(
            f"{option} must be a number in (0, {MAX_LOSS_LIMIT:g}] nats per token, got {value!r}",
            hint=f"the default is {MAX_LOSS:g}",
        )
    return v


def check_tolerance(value, option: str = "tolerance") -> float:
    """``value`` as a float when it is a usable proportion-sum tolerance (finite, >= 0)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not (math.isfinite(v) and v >= 0):
        raise errors.OptionError(
            f"{option} must be a finite number >= 0, got {value!r}",
            hint=f"the default is {SUM_TOLERANCE:g}; a NaN or infinite "
            "tolerance would switch the check off",
        )
    return v


def check_loss(
    value,
    *,
    max_loss: float = MAX_LOSS,
    source: str | None = None,
    row: int | None = None,
    run: str | None = None,
    column: str | None = None,
) -> float:
    """One loss cell under the plausibility rule: a float, NaN for a missing loss (None, empty
    text, NaN); NonFiniteLossError / NonPositiveLossError / ImplausibleLossError otherwise.
    Text that is not a number is a NonNumericError. Used by loaders and the ledger's ingest."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return math.nan
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise errors.NonNumericError(
            f"{value!r} is not a number",
            source=source,
            row=row,
            run=run,
            column=column,
            hint="write the loss in nats per token, or leave it empty when unknown",
        ) from None
    if math.isnan(v):
        return v
    _raise_for_loss(v, max_loss, source, row, run, column)
    return v


def _raise_for_loss(v: float, max_loss: float, source, row, run, column) -> None:
    """Raise the named error for a non-NaN loss ``v`` that breaks the rule."""
    if math.isinf(v):
        raise errors.NonFiniteLossError(
            f"loss {v} is not finite",
            source=source,
            row=row,
            run=run,
            column=column,
            hint="leave the cell empty (or nan) if the loss is unknown",
        )
    if v <= 0:
        raise errors.NonPositiveLossError(
            f"loss {v:g} is not positive",
            source=source,
            row=row,
            run=run,
            column=column,
            hint="losses are cross-entropies in nats per token, always > 0",
        )
    if v > max_loss:
        raise errors.ImplausibleLossError(
            f"loss {v:g} is above the plausible maximum of {max_loss:g} nats per token",
            source=source,
            row=row,
            run=run,
            column=column,
            hint="losses are mean nats per token (not sums, bits or perplexities); raise the "
            "bound with --max-loss if the value is real",
        )


def _normalise_name(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _check_domain_names(names: Sequence[str], kind: str, column_prefix: str, source: str | None):
    """Reject empty names and names that collide after case/punctuation folding (likely typos)."""
    seen: dict[str, str] = {}
    for name in names:
        if not name or name != name.strip():
            raise errors.DomainNameError(
                f"{kind} domain name {name!r} is empty or has surrounding spaces",
                source=source,
                column=column_prefix + name,
                hint="rename the column",
            )
        for ch, why in _FORBIDDEN_NAME_CHARS.items():
            if ch in name:
                raise errors.DomainNameError(
                    f"{kind} domain name {name!r} contains {ch!r} ({why})",
                    source=source,
                    column=column_prefix + name,
                    hint="rename the column, e.g. with '_' instead",
                )
        key = _normalise_name(name)
        if key in seen:
            raise errors.DomainNameError(
                f"{kind} domains {seen[key]!r} and {name!r} differ only in case or punctuation",
                source=source,
                column=column_prefix + name,
                hint="use one spelling for one domain",
            )
        seen[key] = name


def check_domain_names(
    names: Sequence[str], kind: str = "training", source: str | None = None
) -> None:
    """The domain-name rule (not empty, no surrounding spaces, no '/', ',' or '=', no two
    names equal up to case and punctuation) for names given outside a run table (e.g.
    ``bayesmix init --domains``); DomainNameError naming the first offender."""
    prefix = MIX_PREFIX if kind == "training" else LOSS_PREFIX
    _check_domain_names([str(n) for n in names], kind, prefix, source)


def check_known_domains(
    names: Iterable[str], known: Sequence[str], kind: str, source: str | None = None
) -> None:
    """Raise DomainNameError for a name not in ``known``, suggesting the closest known name."""
    known = list(known)
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
            raise errors.DomainNameError(
                f"unknown {kind} domain {name!r}", source=source, hint=hint
            )


class RunTable:
    """Validated proxy-run records. Immutable by convention: methods return new tables.

    Build with :meth:`from_frame` (validates) or :func:`bayesmix.load`; the constructor takes
    records that are already valid.
    Views: :meth:`to_tidy` (the documented layout), :meth:`to_long` (one row per loss),
    :meth:`to_xarray` (dims run, train_domain, eval_domain[, step]).

    Parameters
    ----------
    records : pandas.DataFrame
        One row per record in the tidy layout (run, [n_params], [step], [tokens],
        mix.<domain>..., loss.<domain>...).
    train_domains, eval_domains : sequence of str
        Training and validation domain names.
    source : str, optional
        Where the records came from (named in errors).

    Examples
    --------
    >>> import pandas as pd
    >>> from bayesmix import RunTable
    >>> frame = pd.DataFrame({"run": ["a", "b"], "mix.web": [0.5, 1.0], "mix.code": [0.5, 0.0],
    ...                       "loss.web": [3.1, 2.9]})
    >>> runs = RunTable.from_frame(frame)
    >>> runs.n_runs, runs.train_domains, runs.eval_domains
    (2, ('web', 'code'), ('web',))
    """

    def __init__(
        self,
        records: pd.DataFrame,
        train_domains: Sequence[str],
        eval_domains: Sequence[str],
        source: str | None = None,
    ):
        self._records = records.reset_index(drop=True)
        self.train_domains = tuple(train_domains)
        self.eval_domains = tuple(eval_domains)
        self.source = source

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        source: str | None = None,
        row_numbers: Sequence[int] | None = None,
        renormalize: bool = False,
        tolerance: float = SUM_TOLERANCE,
        report: list[str] | None = None,
        max_loss: float = MAX_LOSS,
    ) -> RunTable:
        """Validate a DataFrame in the documented tidy layout and return a RunTable.

        Parameters
        ----------
        frame : pandas.DataFrame
            run, [n_params], [step], [tokens], mix.<domain>..., loss.<domain>...
        source : str, optional
            Where it came from (named in errors).
        row_numbers : sequence of int, optional
            The line number of each row in ``source`` for error messages (default: CSV line
            numbers, header on line 1).
        renormalize : bool, default False
            Rescale proportions that sum within 0.5 of 1 to exactly 1 instead of rejecting
            sums off by more than ``tolerance``.
        report : list, optional
            Receives a line saying by how much proportions were rescaled.
        max_loss : float
            The plausibility bound on losses (nats per token; see the module docstring).

        Returns
        -------
        RunTable
            The validated table; bad input is a BayesmixError naming row and column.

        Examples
        --------
        >>> import pandas as pd
        >>> from bayesmix import RunTable
        >>> frame = pd.DataFrame({"run": ["a"], "mix.web": [0.7], "mix.code": [0.2],
        ...                       "loss.web": [3.0]})
        >>> RunTable.from_frame(frame)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        bayesmix.errors.ProportionSumError: row 2, run 'a': ...
        """
        if not tolerance >= 0:  # NaN or negative would switch the sum check off
            check_tolerance(tolerance)
        max_loss = check_max_loss(max_loss)
        if frame is None or len(frame) == 0:
            raise errors.EmptyInputError(
                "no data rows", source=source, hint="a run table needs at least one run"
            )
        frame = frame.copy()
        frame.columns = [str(c) for c in frame.columns]
        if row_numbers is None:
            row_numbers = list(range(2, len(frame) + 2))
        rows = list(row_numbers)

        if "run" not in frame.columns:
            raise errors.FormatError(
                "no 'run' column",
                source=source,
                hint="the tidy layout is run, [n_params], [step], [tokens], mix.<domain>..., "
                "loss.<domain>...",
            )
        mix_cols = [c for c in frame.columns if c.startswith(MIX_PREFIX)]
        loss_cols = [c for c in frame.columns if c.startswith(LOSS_PREFIX)]
        known = {"run", *META_COLUMNS, *schedules.SCHEDULE_COLUMNS, *mix_cols, *loss_cols}
        extra = [c for c in frame.columns if c not in known]
        if extra:
            # candidates: known columns, and the name with a corrected prefix (los.x -> loss.x)
            rest = extra[0].split(".", 1)[-1]
            candidates = sorted((known - {"run"}) | {MIX_PREFIX + rest, LOSS_PREFIX + rest})
            close = difflib.get_close_matches(extra[0], candidates, n=1, cutoff=0.6)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else (
                    "allowed: run, n_params, step, tokens, mix.<domain>, loss.<domain>, and "
                    "the schedule columns " + ", ".join(schedules.SCHEDULE_COLUMNS)
                )
            )
            raise errors.FormatError(
                f"unknown column {extra[0]!r}", source=source, column=extra[0], hint=hint
            )
        if not mix_cols:
            raise errors.FormatError(
                "no 'mix.<domain>' proportion columns",
                source=source,
                hint="name each proportion column mix.<training domain>",
            )
        if not loss_cols:
            raise errors.FormatError(
                "no 'loss.<domain>' columns",
                source=source,
                hint="name each loss column loss.<validation domain>",
            )
        train = [c[len(MIX_PREFIX) :] for c in mix_cols]
        evals = [c[len(LOSS_PREFIX) :] for c in loss_cols]
        _check_domain_names(train, "training", MIX_PREFIX, source)
        _check_domain_names(evals, "validation", LOSS_PREFIX, source)

        # run ids: non-empty strings
        run_ids = []
        for k, v in enumerate(frame["run"].tolist()):
            if v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip() == "":
                raise errors.MissingValueError(
                    "run id is empty",
                    source=source,
                    row=rows[k],
                    column="run",
                    hint="give every record a run id",
                )
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            run_ids.append(str(v).strip())
        frame["run"] = run_ids

        numeric_cols = [c for c in (*META_COLUMNS, *mix_cols, *loss_cols) if c in frame.columns]
        for col in numeric_cols:
            frame[col] = _to_numeric(frame[col], col, source, rows, run_ids)

        for col in mix_cols:
            vals = frame[col].to_numpy()
            for i in np.flatnonzero(np.isnan(vals)):
                raise errors.MissingValueError(
                    "proportion is missing",
                    source=source,
                    row=rows[i],
                    run=run_ids[i],
                    column=col,
                    hint="write 0 for a domain the run did not train on",
                )
            for i in np.flatnonzero(vals < 0):
                raise errors.NegativeProportionError(
                    f"proportion {vals[i]:g} is negative",
                    source=source,
                    row=rows[i],
                    run=run_ids[i],
                    column=col,
                    hint="proportions must be >= 0",
                )
        mix = frame[mix_cols].to_numpy(dtype=float)
        sums = mix.sum(axis=1)
        bad = np.abs(sums - 1.0) > tolerance
        if renormalize:
            hopeless = np.flatnonzero(np.abs(sums - 1.0) > 0.5)
            for i in hopeless:
                raise errors.ProportionSumError(
                    f"proportions sum to {sums[i]:.6g}, too far from 1 to renormalise",
                    source=source,
                    row=rows[i],
                    run=run_ids[i],
                    hint="check that the mix.* columns hold shares, not token counts",
                )
            frame[mix_cols] = mix / sums[:, None]
            if report is not None:
                dev = np.abs(sums - 1.0)
                report.append(
                    f"renormalised {int((dev > 0).sum())} of {len(sums)} records; "
                    f"largest change in sum {dev.max():.4g}"
                )
        else:
            for i in np.flatnonzero(bad):
                raise errors.ProportionSumError(
                    f"proportions sum to {sums[i]:.6g}, not 1 (tolerance {tolerance:g})",
                    source=source,
                    row=rows[i],
                    run=run_ids[i],
                    hint="fix the shares or pass renormalize=True (CLI: --renormalize)",
                )

        for col in ("n_params", "tokens", "step"):
            if col in frame.columns:
                vals = frame[col].to_numpy()
                # step/tokens 0 is a run's starting checkpoint (continual pre-training); a model
                # size must be positive.
                too_small = vals <= 0 if col == "n_params" else vals < 0
                kind = "positive" if col == "n_params" else "non-negative"
                for i in np.flatnonzero((~np.isfinite(vals) & ~np.isnan(vals)) | too_small):
                    raise errors.NonNumericError(
                        f"{col} must be a {kind} finite number, got {vals[i]:g}",
                        source=source,
                        row=rows[i],
                        run=run_ids[i],
                        column=col,
                    )

        loss = frame[loss_cols].to_numpy(dtype=float)
        for test in (np.isinf(loss), loss <= 0, loss > max_loss):  # NaN: missing, allowed
            for i, j in zip(*np.nonzero(test)):
                _raise_for_loss(
                    float(loss[i, j]), max_loss, source, rows[i], run_ids[i], loss_cols[j]
                )
        for i in np.flatnonzero(np.isnan(loss).all(axis=1)):
            raise errors.NoLossesError(
                "record has no loss on any validation domain",
                source=source,
                row=rows[i],
                run=run_ids[i],
                hint="drop the record or fill in at least one loss",
            )

        key = ["run", "step"] if "step" in frame.columns else ["run"]
        dup = frame.duplicated(subset=key, keep="first").to_numpy()
        for i in np.flatnonzero(dup):
            what = f"run {run_ids[i]!r}" + (
                f" at step {frame['step'].iloc[i]:g}" if "step" in frame.columns else ""
            )
            raise errors.DuplicateRunError(
                f"{what} appears twice",
                source=source,
                row=rows[i],
                column=key[-1],
                hint="give each run a unique id" + (" and step" if len(key) == 2 else ""),
            )
        per_run = [c for c in ("n_params", *mix_cols) if c in frame.columns]
        if len(key) == 2:
            for col in per_run:
                spread = frame.groupby("run", sort=False)[col].agg(lambda s: s.max() - s.min())
                bad_runs = spread[spread > 1e-9]
                if len(bad_runs):
                    run = bad_runs.index[0]
                    first = run_ids.index(run)
                    raise errors.InconsistentMixtureError(
                        f"{col} differs between checkpoints of the same run",
                        source=source,
                        row=rows[first],
                        run=run,
                        column=col,
                        hint="a run has one mixture and one model size; use another run id",
                    )
        frame = schedules.check_columns(frame, source, rows, run_ids)
        meta = [c for c in (*META_COLUMNS, *schedules.SCHEDULE_COLUMNS) if c in frame.columns]
        ordered = ["run", *meta, *mix_cols, *loss_cols]
        return cls(frame[ordered], train, evals, source=source)

    # ------------------------------------------------------------------ basic facts
    @property
    def has_steps(self) -> bool:
        return "step" in self._records.columns

    @property
    def runs(self) -> tuple[str, ...]:
        """Run ids in first-seen order (one per run, whatever its number of checkpoints)."""
        return tuple(pd.unique(self._records["run"]))

    @property
    def n_runs(self) -> int:
        return len(self.runs)

    def __len__(self) -> int:
        return len(self._records)

    def _repr_html_(self) -> str:
        from bayesmix.display import card

        facts = [
            ("runs / records", f"{self.n_runs} / {len(self)}"),
            ("training domains", ", ".join(self.train_domains)),
            ("validation domains", ", ".join(self.eval_domains)),
        ]
        if self.source:
            facts.append(("source", str(self.source)))
        return card("RunTable", facts, self.to_tidy())

    def __repr__(self) -> str:
        return (
            f"RunTable({self.n_runs} runs, {len(self)} records, "
            f"{len(self.train_domains)} training x {len(self.eval_domains)} validation domains"
            + (f", from {self.source}" if self.source else "")
            + ")"
        )

    @property
    def mixtures(self) -> pd.DataFrame:
        """Proportions per run: DataFrame (index ``run``, columns training domains)."""
        cols = [MIX_PREFIX + d for d in self.train_domains]
        out = self._records.drop_duplicates("run")[["run", *cols]].set_index("run")
        out.columns = list(self.train_domains)
        out.columns.name = "train_domain"
        return out

    @property
    def losses(self) -> pd.DataFrame:
        """Losses per record: DataFrame (index ``run`` [and ``step``], columns eval domains)."""
        key = ["run", "step"] if self.has_steps else ["run"]
        cols = [LOSS_PREFIX + d for d in self.eval_domains]
        out = self._records[[*key, *cols]].set_index(key)
        out.columns = list(self.eval_domains)
        out.columns.name = "eval_domain"
        return out

    def column(self, name: str) -> pd.Series | None:
        """A meta column (``n_params``, ``step``, ``tokens``) per record, or None if absent."""
        return self._records[name] if name in self._records.columns else None

    # ------------------------------------------------------------------ selections
    def final(self) -> RunTable:
        """The last checkpoint of every run (the table itself when there are no steps)."""
        if not self.has_steps:
            return self
        idx = self._records.groupby("run", sort=False)["step"].idxmax()
        return self._subset(self._records.loc[sorted(idx)])

    def at_step(self, step: float) -> RunTable:
        """Records at exactly ``step``; runs without that checkpoint are dropped."""
        if not self.has_steps:
            raise errors.FormatError(
                "this run table has no steps", source=self.source, column="step"
            )
        sel = self._records[self._records["step"] == step]
        if sel.empty:
            raise errors.EmptyInputError(f"no record at step {step:g}", source=self.source)
        return self._subset(sel)

    def select(self, runs: Iterable[str]) -> RunTable:
        """Records of the given runs, in the given order."""
        runs = [str(r) for r in runs]
        missing = [r for r in runs if r not in set(self._records["run"])]
        if missing:
            raise errors.FormatError(f"unknown run {missing[0]!r}", source=self.source)
        order = {r: i for i, r in enumerate(runs)}
        sel = self._records[self._records["run"].isin(order)]
        sel = sel.iloc[np.argsort(sel["run"].map(order).to_numpy(), kind="stable")]
        return self._subset(sel)

    def _subset(self, records: pd.DataFrame) -> RunTable:
        return RunTable(records, self.train_domains, self.eval_domains, source=self.source)

    def concat(self, other: RunTable) -> RunTable:
        """Append another table with the same domains; re-validated (duplicates are errors)."""
        if set(other.train_domains) != set(self.train_domains):
            raise errors.DomainNameError(
                "training domains differ: "
                f"{sorted(set(self.train_domains) ^ set(other.train_domains))}",
                source=other.source,
                hint="both tables need the same mix.* columns",
            )
        tidy = pd.concat([self.to_tidy(), other.to_tidy()], ignore_index=True)
        # both tables passed their own loss bound already
        return RunTable.from_frame(
            tidy, source=other.source or self.source, max_loss=MAX_LOSS_LIMIT
        )

    # ------------------------------------------------------------------ views
    def to_tidy(self) -> pd.DataFrame:
        """The documented tidy layout (a copy): round-trips exactly through from_frame."""
        return self._records.copy()

    def to_long(self) -> pd.DataFrame:
        """One row per observed loss: run, [n_params, step, tokens], eval_domain, loss."""
        meta = ["run", *[c for c in META_COLUMNS if c in self._records.columns]]
        cols = [LOSS_PREFIX + d for d in self.eval_domains]
        long = self._records[meta + cols].melt(
            id_vars=meta, var_name="eval_domain", value_name="loss"
        )
        long["eval_domain"] = long["eval_domain"].str.slice(len(LOSS_PREFIX))
        return long.dropna(subset=["loss"]).reset_index(drop=True)

    def to_xarray(self) -> xr.Dataset:
        """Dataset with ``proportions (run, train_domain)`` and ``loss (run, eval_domain[, step])``.

        With steps, ``loss`` and ``tokens`` have a ``step`` dim (NaN where a run has no such
        checkpoint); ``n_params`` has dim ``run``.
        """
        mix = self.mixtures
        coords: dict[str, Any] = {
            "run": list(mix.index),
            "train_domain": list(self.train_domains),
            "eval_domain": list(self.eval_domains),
        }
        data: dict[str, tuple] = {
            "proportions": (("run", "train_domain"), mix.to_numpy(dtype=float))
        }
        rec = self._records
        if "n_params" in rec.columns:
            data["n_params"] = (
                ("run",),
                rec.drop_duplicates("run")
                .set_index("run")
                .loc[coords["run"], "n_params"]
                .to_numpy(dtype=float),
            )
        cols = [LOSS_PREFIX + d for d in self.eval_domains]
        if self.has_steps:
            steps = np.sort(rec["step"].dropna().unique())
            coords["step"] = steps
            loss = np.full((len(coords["run"]), len(self.eval_domains), len(steps)), np.nan)
            tokens = np.full((len(coords["run"]), len(steps)), np.nan)
            ri = pd.Index(coords["run"]).get_indexer(rec["run"])
            si = pd.Index(steps).get_indexer(rec["step"])
            ok = si >= 0
            loss[ri[ok], :, si[ok]] = rec.loc[ok, cols].to_numpy(dtype=float)
            data["loss"] = (("run", "eval_domain", "step"), loss)
            if "tokens" in rec.columns:
                tokens[ri[ok], si[ok]] = rec.loc[ok, "tokens"].to_numpy(dtype=float)
                data["tokens"] = (("run", "step"), tokens)
        else:
            data["loss"] = (("run", "eval_domain"), rec[cols].to_numpy(dtype=float))
            if "tokens" in rec.columns:
                data["tokens"] = (("run",), rec["tokens"].to_numpy(dtype=float))
        ds = xr.Dataset(data, coords=coords)
        ds["loss"].attrs["units"] = "nats per token"
        return ds

    def summary(self) -> dict:
        """Counts and ranges for ``bayesmix validate``: a plain dict (JSON-friendly)."""
        rec = self._records
        loss = rec[[LOSS_PREFIX + d for d in self.eval_domains]]
        mix = self.mixtures
        out: dict[str, Any] = {
            "source": self.source,
            "runs": self.n_runs,
            "records": len(rec),
            "train_domains": list(self.train_domains),
            "eval_domains": list(self.eval_domains),
            "missing_losses": int(loss.isna().to_numpy().sum()),
            "proportion_range": {
                d: [float(mix[d].min()), float(mix[d].max())] for d in self.train_domains
            },
        }
        if "n_params" in rec.columns:
            out["sizes"] = sorted(float(v) for v in rec["n_params"].dropna().unique())
        if self.has_steps:
            steps = np.sort(rec["step"].dropna().unique())
            out["steps"] = {
                "count": len(steps),
                "min": float(steps.min()),
                "max": float(steps.max()),
            }
        return out


def _to_numeric(series: pd.Series, col: str, source, rows, run_ids) -> pd.Series:
    """Convert a column to float, raising NonNumericError at the first text cell."""
    out = pd.to_numeric(series, errors="coerce")
    bad = out.isna() & series.notna() & (series.astype(str).str.strip() != "")
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise errors.NonNumericError(
            f"{series.iloc[i]!r} is not a number",
            source=source,
            row=rows[i],
            run=run_ids[i],
            column=col,
            hint="write numbers with a '.' decimal point, leave unknown cells empty",
        )
    return out.astype(float)


def as_run_table(runs, name: str = "runs") -> RunTable:
    """``runs`` as a RunTable: a RunTable as it is, a pandas DataFrame in the tidy layout
    validated (:meth:`RunTable.from_frame`); anything else is a TypeError saying what to pass."""
    if isinstance(runs, RunTable):
        return runs
    if isinstance(runs, pd.DataFrame):
        return RunTable.from_frame(runs, source="DataFrame")
    raise TypeError(
        f"{name} must be a RunTable or a pandas DataFrame in the tidy layout (run, [n_params], "
        f"[step], [tokens], mix.<domain>..., loss.<domain>...), got {type(runs).__name__}; "
        "bayesmix.load reads files"
    )
