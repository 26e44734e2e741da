"""Many downstream tasks in one posterior: M4 per task with the slopes pooled by task family.

Each validation domain is a task (an evaluation such as ``mmlu_anatomy:rc::olmes``). The law of
one task is M4 (:mod:`bayesmix.laws.m4`), ``L_i(r) = m_i (1 - rho_i + rho_i exp(t_i . r))``;
what changes is how the relative slopes ``b`` (``t = b / rho``) share strength:

    b_raw_ij ~ Normal(b_mu_j + B_{g(i) j}, b_sigma_i),   B_gj ~ Normal(0, b_family_sigma),
    log b_sigma_i ~ Normal(log b_sigma, b_sigma_spread)

``b_mu_j`` is what training domain j does to every task, ``B_gj`` what it does to the tasks of
family g (``mmlu``, ``minerva_math``, ...) beyond that, and ``b_sigma_i`` how far task i departs
from its family (tasks differ in how much the mixture moves them at all). With 57 MMLU
subjects a family's slopes are pinned by all of them, so a subject with a noisy metric borrows
its family's effect instead of the global one. Families come from the names
(:func:`task_families`) or the specification's ``[hierarchy.families]`` table (task name or
glob -> family). Every task keeps its own 24 slopes (no low-rank constraint): the figures on
Olmix's swarm are in docs/downstream.md.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import ClassVar

import pymc as pm
import pytensor.tensor as pt

from bayesmix.laws.m4 import (
    M4,
    M4_PRIORS,
    SLOPE_CENTERING,
    centred_block,
    pooled_matrix,
)

#: The dim of the family-level slopes.
FAMILY_DIM = "task_family"

TASKS_PRIORS: dict[str, dict] = {
    **M4_PRIORS,
    # B_gj ~ Normal(0, b_family_sigma): a family's shared departure from the global slopes,
    # as wide as a task's own (b_sigma's prior) so neither level is favoured a priori
    "b_family_sigma": {"dist": "HalfNormal", "sigma": 0.3},
    # log b_sigma_i ~ Normal(log b_sigma, b_sigma_spread): how far a task departs from its
    # family varies by task (Olmix: code tasks move 25% of their loss with the mixture,
    # winogrande 2%); 0.5 lets tasks differ by a factor of e over +-2 sd
    "b_sigma_spread": {"dist": "HalfNormal", "sigma": 0.5},
}


def default_family(task: str, names: Sequence[str]) -> str:
    """The family of ``task`` among ``names``: the longest ``_``-separated head of the name
    before its first ``:`` that the same two or more tasks share, else that whole stem
    (``mmlu_anatomy:rc::olmes`` -> ``mmlu``, ``minerva_math_algebra::olmes`` ->
    ``minerva_math``, ``hellaswag:rc::olmes`` -> ``hellaswag``)."""
    stem = task.split(":", 1)[0]
    stems = {n.split(":", 1)[0] for n in names}
    parts = stem.split("_")

    def sharers(head: str) -> set[str]:
        return {s for s in stems if s == head or s.startswith(head + "_")}

    for cut in range(1, len(parts)):
        group = sharers("_".join(parts[:cut]))
        if len(group) > 1:
            while cut < len(parts) and sharers("_".join(parts[: cut + 1])) == group:
                cut += 1
            return "_".join(parts[:cut])
    return stem


def task_families(names: Sequence[str], given: Mapping[str, str] | None = None) -> dict[str, str]:
    """task -> family for every name: the first entry of ``given`` (task name or glob ->
    family) that matches, else :func:`default_family`."""
    given = dict(given or {})
    out = {}
    for name in names:
        hit = next((f for pat, f in given.items() if fnmatch.fnmatchcase(name, pat)), None)
        out[name] = str(hit) if hit is not None else default_family(name, names)
    return out


def family_index(names: Sequence[str], given: Mapping[str, str] | None = None):
    """(family names in order of first appearance, each task's family number)."""
    fams = task_families(names, given)
    order = list(dict.fromkeys(fams[n] for n in names))
    return order, [order.index(fams[n]) for n in names]


class Tasks(M4):
    """M4 per task with family-pooled slopes (see the module docstring)."""

    name = "tasks"
    description = "M4 per downstream task, slopes pooled by task family"
    priors = TASKS_PRIORS
    model = "tasks"
    hierarchy_keys: ClassVar[tuple[str, ...]] = ("families",)

    def build(self, ctx):
        """M4's block (:meth:`M4.build`) with the slopes' prior mean shifted by the task's
        family, ``b_mu_j + B_{g(i) j}`` (``B`` non-centred, dims ``task_family`` x
        ``train_domain``), and a spread per task (``b_sigma_z`` non-centred)."""
        return centred_block(ctx, self._slopes)

    @staticmethod
    def _slopes(ctx, rho):
        fams, idx = family_index(ctx.eval_domains, ctx.hierarchy.get("families"))
        pm.modelcontext(None).add_coord(FAMILY_DIM, fams)
        loc = ctx.prior("b_mu", dims="train_domain")[None, :]
        if ctx.diagonal is not None:
            loc = loc + ctx.prior("diag_mu") * ctx.diagonal
        fam_z = pm.Normal("b_family_z", 0.0, 1.0, dims=(FAMILY_DIM, "train_domain"))
        fam = ctx.prior("b_family_sigma") * fam_z
        loc = loc + fam[pt.as_tensor(idx)]
        spread = ctx.prior("b_sigma_spread")
        scale_z = pm.Normal("b_sigma_z", 0.0, 1.0, dims="eval_domain")
        scale = ctx.prior("b_sigma") * pt.exp(spread * scale_z)[:, None]
        b_raw = pooled_matrix(
            ctx,
            "b_raw",
            loc,
            scale,
            centered=ctx.centered,
            weight=ctx.inputs.get(SLOPE_CENTERING),
        )
        b = pm.Deterministic(
            "b", b_raw - b_raw.mean(axis=1, keepdims=True), dims=("eval_domain", "train_domain")
        )
        return pm.Deterministic("t", b / rho[:, None], dims=("eval_domain", "train_domain"))
