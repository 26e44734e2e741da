"""Domain maps: express runs of an earlier domain set in a later one, so earlier runs stay usable.

A training-domain set changes between swarms: a source is split, merged, deduplicated, added or
dropped. A :class:`DomainMap` says declaratively how the old set becomes the new one, and
:meth:`DomainMap.apply` (``RunTable.remap``, ``bayesmix remap``) rewrites the old runs' shares in
the new set; their losses are unchanged (they are what those runs measured). The map, in TOML::

    from = "v1"                      # optional labels of the two domain-set versions
    to = "v2"
    add = ["forum"]                  # new domains: share 0 in every old run
    drop = ["dedup_web"]             # old domains with no successor
    drop_runs = "exclude"            # old runs with a dropped domain: "exclude" or "renormalize"
    domains = ["web", "code", ...]   # optional: the new set, in order (checked)

    [rename]
    wiki = "wikipedia"               # old name = new name
    [merge]
    academic = ["arxiv", "pubmed"]   # new domain = sum of these old shares
    [split.books]                    # old domain -> new parts
    into = ["books3", "pg19"]
    tokens = [101.0, 11.0]           # the parts' sizes (any unit): the fractions' prior

Old domains the map does not name are kept under their name. A split divides an old run's share
among the parts in proportion to ``tokens``: the within-domain fractions of old runs are fixed at
the token shares (a run whose source was trained at its natural composition has exactly these
fractions; one that was not gets them wrong by as much as its composition differed); a fit infers
them instead with :mod:`bayesmix.data.latent_splits`. Domains added by the map are exactly
absent from the old runs: fit them with a law that has the absence term (``law =
"<law>+absent"``, :mod:`bayesmix.laws.absence`) so that the old runs' zero shares are not
read as the law's smooth share-0 limit.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.data import phases

MIX_PREFIX = "mix."
#: What ``drop_runs`` may say: old runs with a share of a dropped domain are left out, or keep
#: their other shares rescaled to sum to 1.
DROP_RUNS = ("exclude", "renormalize")
_KEYS = {"from", "to", "add", "drop", "drop_runs", "domains", "rename", "merge", "split"}


@dataclass(frozen=True)
class Split:
    """An old domain divided among new ``parts`` with fixed ``fractions`` (sum 1)."""

    parts: tuple[str, ...]
    fractions: tuple[float, ...]


@dataclass(frozen=True)
class DomainMap:
    """How an old training-domain set becomes a new one (see the module docstring).

    ``rename``: old -> new name; ``merge``: new -> old domains summed into it; ``split``: old ->
    :class:`Split`; ``add``: new domains (share 0 in old runs); ``drop``: old domains with no
    successor; ``drop_runs``: what happens to old runs with a share of one (:data:`DROP_RUNS`);
    ``domains``: the new set in order, or empty (then: old order, parts in place, added last);
    ``version_from``/``version_to``: labels of the two sets; ``source``: named in errors.
    """

    rename: Mapping[str, str] = field(default_factory=dict)
    merge: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    split: Mapping[str, Split] = field(default_factory=dict)
    add: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    drop_runs: str = "exclude"
    domains: tuple[str, ...] = ()
    version_from: str = ""
    version_to: str = ""
    source: str | None = None

    # ------------------------------------------------------------------ reading
    @classmethod
    def from_file(cls, path: str | Path) -> DomainMap:
        """Read a map from TOML; errors name the file and the field."""
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise errors.UnreadableFileError(
                f"cannot read the domain map: {err.strerror}", source=str(path)
            ) from None
        except tomllib.TOMLDecodeError as err:
            raise errors.UnreadableFileError(
                f"not valid TOML: {err}", source=str(path), hint="see docs/domain_changes.md"
            ) from None
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: Mapping, source: str | None = "domain map") -> DomainMap:
        """A map from its TOML tables as a dict; SpecError naming the field when malformed."""
        if not isinstance(raw, Mapping):
            raise _bad("", "must be a table", source)
        unknown = sorted(set(raw) - _KEYS)
        if unknown:
            raise _bad(unknown[0], "is not a domain-map field", source, f"use {sorted(_KEYS)}")
        drop_runs = str(raw.get("drop_runs", "exclude"))
        if drop_runs not in DROP_RUNS:
            raise _bad("drop_runs", f"must be one of {DROP_RUNS}, got {drop_runs!r}", source)
        out = cls(
            rename={
                str(k): _name(v, f"rename.{k}", source)
                for k, v in _table(raw, "rename", source).items()
            },
            merge={
                str(k): _names(v, f"merge.{k}", source, min_len=1)
                for k, v in _table(raw, "merge", source).items()
            },
            split={
                str(k): _split(v, f"split.{k}", source)
                for k, v in _table(raw, "split", source).items()
            },
            add=_names(raw.get("add", []), "add", source),
            drop=_names(raw.get("drop", []), "drop", source),
            drop_runs=drop_runs,
            domains=_names(raw.get("domains", []), "domains", source),
            version_from=str(raw.get("from", "")),
            version_to=str(raw.get("to", "")),
            source=source,
        )
        out.check_consistent()
        return out

    def check_consistent(self) -> None:
        """Every old domain is used at most once, and every new name is made once."""
        used: dict[str, str] = {}
        sources = [(f"rename.{k}", k) for k in self.rename]
        sources += [(f"merge.{new}", old) for new, olds in self.merge.items() for old in olds]
        sources += [(f"split.{k}", k) for k in self.split]
        sources += [("drop", d) for d in self.drop]
        for where, old in sources:
            if old in used:
                raise _bad(where, f"old domain {old!r} is also used by {used[old]}", self.source)
            used[old] = where
        made: dict[str, str] = {}
        news = [(f"rename.{k}", v) for k, v in self.rename.items()]
        news += [(f"merge.{k}", k) for k in self.merge]
        news += [(f"split.{k}.into", p) for k, s in self.split.items() for p in s.parts]
        news += [("add", a) for a in self.add]
        for where, new in news:
            if new in made:
                raise _bad(where, f"new domain {new!r} is also made by {made[new]}", self.source)
            made[new] = where

    # ------------------------------------------------------------------ applying
    def new_domains(self, old: Sequence[str]) -> tuple[str, ...]:
        """The new training-domain set made from the old set ``old`` (checked against the map)."""
        self.check_old(old)
        merged_into = {o: new for new, olds in self.merge.items() for o in olds}
        out: list[str] = []
        for d in old:
            if d in self.drop:
                continue
            if d in self.split:
                out += self.split[d].parts
            elif d in merged_into:
                if merged_into[d] not in out:
                    out.append(merged_into[d])
            else:
                out.append(self.rename.get(d, d))
        out += [a for a in self.add if a not in out]
        clash = [a for a in self.add if a in old and a not in self.drop and a not in self.rename]
        if clash:
            raise _bad("add", f"{clash[0]!r} is already an old domain", self.source)
        if len(set(out)) < len(out):
            dup = next(d for d in out if out.count(d) > 1)
            raise _bad(
                "",
                f"the new domain {dup!r} is made twice (an old domain keeps that name)",
                self.source,
            )
        if self.domains:
            if set(self.domains) != set(out):
                extra = sorted(set(self.domains) - set(out))
                missing = sorted(set(out) - set(self.domains))
                what = (
                    f"names {extra[0]!r}, which the map does not make"
                    if extra
                    else f"leaves out {missing[0]!r}, which the map makes"
                )
                raise _bad("domains", what, self.source)
            out = list(self.domains)
        return tuple(out)

    def check_old(self, old: Sequence[str]) -> None:
        """DomainNameError naming the field when the map names an old domain the runs lack."""
        known = set(old)
        named = [(f"rename.{k}", k) for k in self.rename]
        named += [(f"merge.{new}", o) for new, olds in self.merge.items() for o in olds]
        named += [(f"split.{k}", k) for k in self.split]
        named += [("drop", d) for d in self.drop]
        for where, d in named:
            if d not in known:
                raise errors.DomainNameError(
                    f"field {where!r}: {d!r} is not a training domain of the runs",
                    source=self.source,
                    hint=f"the runs have {', '.join(old)}",
                )

    def shares(self, mix: pd.DataFrame) -> pd.DataFrame:
        """Old shares (run, old domain) -> new shares (run, new domain); dropped shares are
        left out (rows then sum to less than 1)."""
        new = self.new_domains(list(mix.columns))
        inverse = {v: k for k, v in self.rename.items()}
        parts = {
            p: (old, f)
            for old, s in self.split.items()
            for p, f in zip(s.parts, s.fractions, strict=True)
        }
        cols = {}
        for d in new:
            if d in self.merge:
                cols[d] = mix[list(self.merge[d])].sum(axis=1)
            elif d in parts:
                cols[d] = mix[parts[d][0]] * parts[d][1]
            elif d in self.add:
                cols[d] = pd.Series(0.0, index=mix.index)
            else:
                cols[d] = mix[inverse.get(d, d)]
        return pd.DataFrame(cols, index=mix.index)

    def convert(self, old: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, str | None]:
        """Old shares (run, old domain) -> (new shares (run, new domain), kept (bool per row),
        note or None): the one rule for dropped domains. A row with a share of a dropped domain
        is not kept (``drop_runs = "exclude"``) or has its other shares rescaled to sum to 1
        (``"renormalize"``); the note says how many rows it changed."""
        new = self.shares(old)
        gone = old[list(self.drop)].sum(axis=1).to_numpy() if self.drop else np.zeros(len(old))
        keep = np.ones(len(old), bool)
        note = None
        if (gone > 0).any():
            n = int(pd.Series(old.index[gone > 0]).nunique())
            if self.drop_runs == "exclude":
                keep = gone <= 0
                note = f"left out {n} runs with a share of a dropped domain"
            else:
                new = new.div(new.sum(axis=1).where(lambda s: s > 0), axis=0)
                note = f"rescaled {n} runs' shares after dropping {', '.join(self.drop)}"
        return new, keep, note

    def apply(self, runs, report: list[str] | None = None):
        """``runs`` (a RunTable of the old set) with its shares in the new set, losses and other
        columns unchanged; re-validated. ``report`` receives a line per change it made to runs
        (left out, rescaled)."""
        tidy = runs.to_tidy()
        mix_cols = [MIX_PREFIX + d for d in runs.train_domains]
        old = tidy[mix_cols].astype(float)
        old.columns = list(runs.train_domains)
        old.index = pd.Index(tidy["run"].to_numpy())
        new, keep, note = self.convert(old)
        new.index = tidy.index
        if note:
            _note(report, note)
        if not keep.any():
            raise errors.EmptyInputError(
                "every run has a share of a dropped domain",
                source=self.source,
                hint='set drop_runs = "renormalize" to keep them',
            )
        # unique tokens are the old domains': the new set's are not known (give them again)
        unique = [c for c in tidy.columns if c.startswith("unique.")]
        if unique:
            _note(report, "dropped the old domains' unique.<domain> columns")
        rest = [
            c
            for c in tidy.columns
            if c not in mix_cols
            and not c.startswith(("loss.", "unique."))
            and not phases.is_phase_column(c)
        ]
        losses = [c for c in tidy.columns if c.startswith("loss.")]
        phase_frame = self._phase_columns(tidy, runs.train_domains, new)
        new.columns = [MIX_PREFIX + d for d in new.columns]
        frame = pd.concat([tidy[rest], new, phase_frame, tidy[losses]], axis=1)[keep]
        return type(runs).from_frame(frame.reset_index(drop=True), source=runs.source)

    def _phase_columns(self, tidy: pd.DataFrame, train, new: pd.DataFrame) -> pd.DataFrame:
        """A phased table's phase columns in the new domains (each phase's shares converted
        like the run's, :meth:`convert`); ``new`` (the whole runs' new shares) is set in place
        to the phase-weighted mixture of phased rows, so the two stay consistent when dropped
        shares are rescaled. Empty when the table has no phases."""
        p = phases.n_phases(list(tidy.columns))
        if p == 0:
            return pd.DataFrame(index=tidy.index)
        fracs = tidy[phases.frac_columns(p)]
        phased = fracs.notna().all(axis=1).to_numpy()
        out = [fracs]
        weighted = np.zeros(new.shape)
        for k, cols in enumerate(phases.mix_columns(p, train)):
            old = tidy[cols].astype(float)
            old.columns = list(train)
            conv = self.convert(old.fillna(0.0))[0].fillna(0.0)
            weighted += fracs.iloc[:, k].fillna(0.0).to_numpy()[:, None] * conv.to_numpy()
            conv.columns = [f"mix{k + 1}.{d}" for d in conv.columns]
            conv.index = tidy.index
            out.append(conv.where(np.broadcast_to(phased[:, None], conv.shape)))
        new.loc[phased] = weighted[phased]
        return pd.concat(out, axis=1)

    # ------------------------------------------------------------------ storing
    def to_dict(self) -> dict:
        """The map as the tables :meth:`from_dict` reads (a split's ``tokens`` are its
        fractions): what a ledger stores with a domain-set version."""
        out: dict = {"drop_runs": self.drop_runs}
        if self.version_from:
            out["from"] = self.version_from
        if self.version_to:
            out["to"] = self.version_to
        for key, value in (("add", self.add), ("drop", self.drop), ("domains", self.domains)):
            if value:
                out[key] = list(value)
        if self.rename:
            out["rename"] = dict(self.rename)
        if self.merge:
            out["merge"] = {k: list(v) for k, v in self.merge.items()}
        if self.split:
            out["split"] = {
                k: {"into": list(s.parts), "tokens": list(s.fractions)}
                for k, s in self.split.items()
            }
        return out


def as_domain_map(value) -> DomainMap:
    """A :class:`DomainMap` from itself, a TOML file path or a dict of its tables."""
    if isinstance(value, DomainMap):
        return value
    if isinstance(value, Mapping):
        return DomainMap.from_dict(value)
    if isinstance(value, str | Path):
        return DomainMap.from_file(value)
    raise TypeError(
        f"a domain map is a DomainMap, a TOML path or a dict, not {type(value).__name__}"
    )


def concat_versions(tables: Sequence):
    """Run tables of one training-domain set (e.g. old runs remapped, and new runs) as one;
    validation domains are the union (a loss a table did not measure is missing). Columns are
    put in the first table's domain order; DomainNameError when the training sets differ."""
    first = tables[0]
    domains = list(first.train_domains)
    evals: list[str] = []
    for t in tables:
        if set(t.train_domains) != set(domains):
            diff = sorted(set(t.train_domains) ^ set(domains))
            raise errors.DomainNameError(
                f"training domains differ ({', '.join(diff)}): remap the older runs first",
                source=t.source,
                hint="bayesmix remap OLD.csv --map MAP.toml",
            )
        evals += [e for e in t.eval_domains if e not in evals]
    frames = [t.to_tidy() for t in tables]
    tidy = pd.concat(frames, ignore_index=True)
    meta = [c for c in tidy.columns if not c.startswith((MIX_PREFIX, "loss."))]
    order = [*meta, *[MIX_PREFIX + d for d in domains], *["loss." + e for e in evals]]
    return type(first).from_frame(tidy[order], source=first.source)


# ---------------------------------------------------------------------- helpers
def _bad(where: str, problem: str, source, hint: str | None = None) -> errors.SpecError:
    text = f"field {where!r} {problem}" if where else problem
    return errors.SpecError(text, source=source, hint=hint or "see docs/domain_changes.md")


def _table(raw: Mapping, key: str, source) -> Mapping:
    value = raw.get(key, {})
    if not isinstance(value, Mapping):
        raise _bad(key, "must be a table", source)
    return value


def _name(value, where: str, source) -> str:
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise _bad(where, f"must be a domain name, got {value!r}", source)
    return value


def _names(value, where: str, source, min_len: int = 0) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) < min_len:
        raise _bad(
            where, f"must be a list of {max(min_len, 1)}+ domain names, got {value!r}", source
        )
    out = tuple(_name(v, where, source) for v in value)
    if len(set(out)) < len(out):
        raise _bad(where, "names a domain twice", source)
    return out


def _split(value, where: str, source) -> Split:
    if not isinstance(value, Mapping) or set(value) != {"into", "tokens"}:
        raise _bad(where, "must be a table with 'into' (parts) and 'tokens' (their sizes)", source)
    parts = _names(value["into"], f"{where}.into", source, min_len=2)
    tokens = value["tokens"]
    ok = isinstance(tokens, list) and len(tokens) == len(parts)
    ok = ok and all(isinstance(t, int | float) and not isinstance(t, bool) for t in tokens)
    if not ok or not all(np.isfinite(t) and t > 0 for t in tokens):
        raise _bad(
            f"{where}.tokens",
            f"must be {len(parts)} positive numbers (one per part), got {tokens!r}",
            source,
        )
    total = float(sum(tokens))
    return Split(parts, tuple(float(t) / total for t in tokens))


def _note(report: list[str] | None, line: str) -> None:
    if report is not None:
        report.append(line)
