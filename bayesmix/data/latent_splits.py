"""Latent split fractions: which parts of remapped old runs a fit infers instead of fixing.

A domain map's split (:class:`bayesmix.data.domain_maps.Split`) divides an old run's share of the
split domain among its parts in fixed proportion to the parts' tokens. :class:`LatentSplits`
records, for the old runs, each split group's share (the old domain's share, a fraction of the
run's training tokens) so that a fit (``bm.fit(runs, spec, latent_splits=...)``) can treat the
parts' shares of those runs as ``share_g * f_g`` with unknown fractions ``f_g`` (sum 1) under a
Dirichlet prior centred at the token fractions, ``f_g ~ Dirichlet(concentration * prior_g)``:

* ``per_run=False``: one fraction vector per group, shared by all old runs (the old swarm
  trained every group at one composition, e.g. the source's natural one);
* ``per_run=True``: a fraction vector per old run and group (the old runs' compositions
  differed within the group, e.g. RegMix's randomly drawn mixtures).

Runs not listed (new runs, fully observed) keep their shares as they are. The model side is
:mod:`bayesmix.model.splits`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayesmix import errors

#: Default Dirichlet concentration (sum of the prior's parameters) of a group's fractions.
CONCENTRATION = 20.0


@dataclass(frozen=True)
class SplitGroup:
    """An old domain ``name`` divided among new ``parts`` with prior fractions ``prior``."""

    name: str
    parts: tuple[str, ...]
    prior: tuple[float, ...]


@dataclass(frozen=True)
class LatentSplits:
    """Split groups whose fractions a fit infers, and each old run's share of each group.

    ``groups``: the split groups; ``shares``: (run id, group name) the old run's share of the
    split domain (fraction of its training tokens); ``concentration``: the Dirichlet's total
    (larger = fractions closer to the prior); ``per_run``: one fraction vector per old run
    (True) or per group (False)."""

    groups: tuple[SplitGroup, ...]
    shares: pd.DataFrame
    concentration: float = CONCENTRATION
    per_run: bool = False

    def __post_init__(self):
        if not (np.isfinite(self.concentration) and self.concentration > 0):
            raise errors.OptionError(
                f"latent split concentration must be a positive number, got {self.concentration!r}",
                param="concentration",
            )
        if not self.groups:
            raise errors.OptionError(
                "latent splits need at least one split group",
                hint="the domain map has no [split.<domain>] table",
                param="latent_splits",
            )

    @property
    def parts(self) -> tuple[str, ...]:
        """Every group's parts in order: the coordinates of the dim ``split_part``."""
        return tuple(p for g in self.groups for p in g.parts)

    def layout(self, train_domains: Sequence[str]) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """(group name, the parts' positions in ``train_domains``) per group; DomainNameError
        naming the part when the runs lack it."""
        index = {d: j for j, d in enumerate(train_domains)}
        out = []
        for g in self.groups:
            missing = [p for p in g.parts if p not in index]
            if missing:
                raise errors.DomainNameError(
                    f"latent split {g.name!r}: part {missing[0]!r} is not a training domain of "
                    "the runs",
                    hint="fit the remapped runs, in the map's new domain set",
                )
            out.append((g.name, tuple(index[p] for p in g.parts)))
        return tuple(out)

    def for_records(
        self, runs: Sequence[str], r: np.ndarray, train_domains: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(r with the latent parts of listed runs set to 0 (record, train_domain), the group
        shares (record, split_group), 0 for runs not listed). ``runs``: each record's run id.

        DataError naming the run when a listed run's parts do not add up to its group share
        (the runs were not remapped with this map)."""
        layout = self.layout(train_domains)
        r = np.array(r, dtype=float)
        share = np.zeros((len(runs), len(layout)))
        known = {str(k): i for i, k in enumerate(self.shares.index)}
        values = self.shares[[g.name for g in self.groups]].to_numpy(dtype=float)
        for row, run in enumerate(runs):
            i = known.get(str(run))
            if i is None:
                continue
            for k, (name, cols) in enumerate(layout):
                total = r[row, list(cols)].sum()
                if abs(total - values[i, k]) > 1e-6:
                    raise errors.FormatError(
                        f"run {run!r}: the parts of latent split {name!r} sum to {total:.6g}, "
                        f"not its recorded share {values[i, k]:.6g}",
                        column=f"mix.{name}",
                        hint="build the latent splits from the runs the table was remapped from",
                    )
                share[row, k] = values[i, k]
                r[row, list(cols)] = 0.0
        return r, share

    def alpha(self) -> np.ndarray:
        """Dirichlet parameters (split_part,): concentration x prior fractions."""
        return self.concentration * np.array([f for g in self.groups for f in g.prior])

    def key(self) -> str:
        """What of the latent splits is model structure (not data): groups, parts, mode."""
        groups = ";".join(f"{g.name}:{','.join(g.parts)}" for g in self.groups)
        return f"splits={groups}|{'per_run' if self.per_run else 'shared'}"


def latent_splits(
    domain_map,
    old_runs,
    *,
    concentration: float = CONCENTRATION,
    per_run: bool = False,
    only: Sequence[str] | None = None,
) -> LatentSplits:
    """The :class:`LatentSplits` of ``old_runs`` (a RunTable of the map's old set, before the
    remap) under ``domain_map`` (a DomainMap, TOML path or dict): each split of the map (or of
    ``only``, names of split old domains), its parts and token fractions, and every old run's
    share of the split domain. Pass it to ``bm.fit`` with the remapped runs (alone or joined
    with new ones by :func:`~bayesmix.data.domain_maps.concat_versions`)."""
    from bayesmix.data.domain_maps import as_domain_map

    dmap = as_domain_map(domain_map)
    names = list(dmap.split) if only is None else list(only)
    unknown = [n for n in names if n not in dmap.split]
    if unknown:
        raise errors.OptionError(
            f"{unknown[0]!r} is not a split of the domain map",
            hint=f"its splits: {', '.join(dmap.split) or 'none'}",
            param="only",
        )
    absent = [n for n in names if n not in old_runs.train_domains]
    if absent:
        raise errors.DomainNameError(
            f"split domain {absent[0]!r} is not a training domain of the old runs",
            source=old_runs.source,
            hint="pass the runs as they were before the remap",
        )
    groups = tuple(
        SplitGroup(n, tuple(dmap.split[n].parts), tuple(dmap.split[n].fractions)) for n in names
    )
    tidy = old_runs.to_tidy()
    shares = pd.DataFrame(
        {n: tidy["mix." + n].to_numpy(dtype=float) for n in names},
        index=pd.Index(tidy["run"].astype(str).to_numpy(), name="run"),
    )
    shares = shares[~shares.index.duplicated(keep="last")]
    return LatentSplits(groups, shares, float(concentration), bool(per_run))
