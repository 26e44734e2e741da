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
``min_lr_ratio``; :mod:`bayesmix.data.schedules`), and a run trained in phases of different
mixtures (``phase_frac.<k>``, ``mix<k>.<domain>``; :mod:`bayesmix.data.phases`).

Losses follow one plausibility rule (missing = empty or nan, kept as NaN; inf, <= 0 or above
``max_loss`` = error), and records the rules of :mod:`bayesmix.data.validation`; both are
checked by :meth:`RunTable.from_frame`.

Domain names (the rule lives here, with the checks of names against known ones) may not be
empty, have surrounding spaces, or contain ``/`` (NetCDF), ``,`` or ``=`` (``NAME=VALUE,...``
share lists, e.g. ``max_share``, could not name them).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from bayesmix import errors
from bayesmix.data import phases, schedules, validation
from bayesmix.data.validation import (
    LOSS_PREFIX,
    MAX_LOSS,
    MAX_LOSS_LIMIT,
    META_COLUMNS,
    MIX_PREFIX,
    SUM_TOLERANCE,
    check_max_loss,
    check_tolerance,
)

#: Characters a domain name may not hold, with the reason (named in the error).
_FORBIDDEN_NAME_CHARS = {
    "/": "NetCDF names cannot hold it",
    ",": "NAME=VALUE,NAME=VALUE share lists could not name it",
    "=": "NAME=VALUE share lists could not name it",
}


def normalise_name(name: str) -> str:
    """``name`` folded for matching: lower case, letters and digits only ("Books-3" -> "books3")."""
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
        key = normalise_name(name)
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
    the domains of a new experiment); DomainNameError naming the first offender."""
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


def check_never_together(tidy: pd.DataFrame, source: str, rows: Sequence[int]) -> None:
    """Two similar validation names never observed in the same record are one domain spelt
    two ways: DomainNameError at the rarer name's first record (``rows``: each record's row)."""
    cols = [c for c in tidy.columns if c.startswith(LOSS_PREFIX)]
    if len(cols) < 2:
        return
    seen = tidy[cols].notna().to_numpy()
    names = [c[len(LOSS_PREFIX) :] for c in cols]
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            ratio = difflib.SequenceMatcher(None, names[a].lower(), names[b].lower()).ratio()
            if ratio < 0.85 or (seen[:, a] & seen[:, b]).any():
                continue
            rare = a if seen[:, a].sum() <= seen[:, b].sum() else b
            other = b if rare == a else a
            i = int(np.flatnonzero(seen[:, rare])[0])
            raise errors.DomainNameError(
                f"validation domains {names[rare]!r} and {names[other]!r} never appear in the "
                "same record: probably one domain spelt two ways",
                source=source,
                row=int(rows[i]) if i < len(rows) else None,
                column=LOSS_PREFIX + names[rare],
                hint=f"spell it {names[other]!r}",
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
        rows = list(row_numbers) if row_numbers is not None else list(range(2, len(frame) + 2))

        mix_cols, loss_cols = validation.check_columns(frame, source)
        train = [c[len(MIX_PREFIX) :] for c in mix_cols]
        evals = [c[len(LOSS_PREFIX) :] for c in loss_cols]
        _check_domain_names(train, "training", MIX_PREFIX, source)
        _check_domain_names(evals, "validation", LOSS_PREFIX, source)
        run_ids = validation.run_ids(frame, source, rows)
        frame["run"] = run_ids
        at = validation.Places(source, rows, run_ids)
        unique_cols = [c for c in frame.columns if c.startswith(validation.UNIQUE_PREFIX)]
        numeric = [c for c in (*META_COLUMNS, *mix_cols, *loss_cols) if c in frame.columns]
        validation.to_numbers(frame, numeric + unique_cols, at)
        unique_cols = validation.check_unique_tokens(frame, train, at)
        validation.check_proportions(
            frame, mix_cols, at, tolerance=tolerance, renormalize=renormalize, report=report
        )
        validation.check_sizes_and_steps(frame, at)
        validation.check_step_cells(frame, at)
        validation.check_losses(frame, loss_cols, max_loss, at)
        validation.check_records(frame, mix_cols, at)
        validation.check_tokens_follow_steps(frame, at)
        frame = schedules.check_columns(frame, source, rows, run_ids)
        phase_cols = phases.check_columns(frame, train, at)
        meta = [c for c in (*META_COLUMNS, *schedules.SCHEDULE_COLUMNS) if c in frame.columns]
        ordered = ["run", *meta, *mix_cols, *phase_cols, *unique_cols, *loss_cols]
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

    def unique_tokens(self) -> dict[str, float] | None:
        """``{training domain: unique tokens available}`` from the ``unique.<domain>``
        columns (the domains that have one), or None when the table has none."""
        prefix = validation.UNIQUE_PREFIX
        found = {
            d: float(self._records[prefix + d].iloc[0])
            for d in self.train_domains
            if prefix + d in self._records.columns
        }
        return found or None

    def phases(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Each record's phase shares (record, P) and phase mixtures (record, P, M) from the
        phase columns (:mod:`bayesmix.data.phases`; a static run as one phase), in record
        order, or None when the table has none."""
        return phases.phase_arrays(self._records, self.train_domains)

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

    def remap(self, domain_map, report: list[str] | None = None) -> RunTable:
        """These runs with their shares in another training-domain set: ``domain_map`` a
        :class:`bayesmix.data.domain_maps.DomainMap`, a TOML file of one or its dict (merge,
        split, add, drop, rename; see docs/domain_changes.md). Losses are unchanged."""
        from bayesmix.data.domain_maps import as_domain_map

        return as_domain_map(domain_map).apply(self, report=report)

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
        steps = np.sort(rec["step"].dropna().unique()) if self.has_steps else np.array([])
        if steps.size:  # a step column with every cell empty says nothing about steps
            out["steps"] = {
                "count": len(steps),
                "min": float(steps.min()),
                "max": float(steps.max()),
            }
        return out


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
