"""Many downstream tasks in one posterior: M4 per task with the slopes pooled by task family.

Each validation domain is a task (an evaluation such as ``mmlu_anatomy:rc::olmes``). The law of
one task is M4 (:mod:`bayesmix.laws.m4`), ``L_i(r) = m_i (1 - rho_i + rho_i exp(t_i . r))``;
what changes is how the relative slopes ``b`` (``t = b / rho``) share strength:

    b_raw_ij ~ Normal(b_mu_j + B_{g(i) j}, b_sigma),   B_gj ~ Normal(0, b_family_sigma),
    b_i = b_raw_i - mean_j(b_raw_ij)

``b_mu_j`` (ZeroSumNormal) is what training domain j does to every task, ``B_gj`` what it does
to the tasks of family g (``mmlu``, ``minerva_math``, ...) beyond that, and ``b_sigma`` how far
a task departs from its family. With 57 MMLU subjects a family's slopes are pinned by all of
them, so a subject with a noisy metric borrows its family's effect instead of the global one.
Families come from the names (:func:`task_families`) or the specification's
``[hierarchy.families]`` table (task name or glob -> family). Every task keeps its own slopes
(no low-rank constraint).

Sampled with ``b_mu`` and ``B`` integrated out (:func:`pooled_logp`) and each task's slopes
whitened by its data (:func:`slope_geometry`); the figures on Olmix's swarm are in
docs/downstream.md.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from bayesmix.laws.m4 import M4, M4_PRIORS, SHARE_CENTER, centred_block
from bayesmix.laws.m4log import zero_sum_basis

#: The dim of the sampled slope contrasts (M - 1 zero-sum directions of the training domains).
CONTRAST_DIM = "task_contrast"
#: ``pm.Data`` names of the whitening (K, M-1, M-1), the start (K, M-1) and the shear by the
#: curvature (K, M-1) of the slope contrasts (:func:`slope_geometry`).
WHITEN, START, SHEAR = "tasks_whiten", "tasks_start", "tasks_shear"
#: Prior scale of a task's relative slopes used only to precondition a task whose data say
#: little (:func:`slope_geometry`).
_PRIOR_SCALE = 0.3

TASKS_PRIORS: dict[str, dict] = {
    **M4_PRIORS,
    # B_gj ~ Normal(0, b_family_sigma): a family's shared departure from the global slopes,
    # as wide as a task's own (b_sigma's prior) so neither level is favoured a priori
    "b_family_sigma": {"dist": "HalfNormal", "sigma": 0.3},
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


def slope_geometry(r, losses, loss_mean) -> dict[str, np.ndarray]:
    """Preconditioner of the slope contrasts ``c_i = H' b_i`` (H: the orthonormal zero-sum
    basis, (M, M-1)) from the data: per task i, the whitening ``W_i = chol(P_i)^-T``, the start
    ``c0_i`` and the shear ``a_i`` by the curvature (the block samples ``c_i + a_i / rho_i =
    c0_i + W_i gamma_i``).

    To first order in the exponent a task's relative losses are linear in the contrasts,
    ``L_ik / mean_i - 1 ~ X_k . c_i`` with ``X = (r - r_bar) H``; ``P_i = X'X / s2_i + I / p2_i``
    is the approximate posterior precision of ``c_i`` (s2_i: the residual variance of task i's
    least-squares fit; p2_i: its slopes' spread beyond their standard errors, as in
    :func:`bayesmix.laws.m4.slope_centering`, floored at 0.01^2), ``c0_i`` the ridge fit with
    that precision, and ``a_i`` the least-squares projection of the second-order term
    ``(X c0_i)^2 / 2`` onto X (why: :func:`bayesmix.laws.m4log.shear`). Every task has its
    own because tasks differ tenfold in how much the mixture moves them (Olmix's swarm: code
    25% of the loss, winogrande 2%), so one W would leave the weak tasks' contrasts
    correlated. Only a preconditioner: any W, c0, a give the same model."""
    r, losses = np.asarray(r, float), np.asarray(losses, float)
    n_train = r.shape[1]
    x_all = (r - r.mean(axis=0)) @ zero_sum_basis(n_train)  # (n, P)
    n_eval, n_coef = losses.shape[1], n_train - 1
    whiten = np.zeros((n_eval, n_coef, n_coef))
    first, shear = np.zeros((n_eval, n_coef)), np.zeros((n_eval, n_coef))
    for i in range(n_eval):
        seen = np.isfinite(losses[:, i])
        x = x_all[seen] - x_all[seen].mean(axis=0)
        y = losses[seen, i] / loss_mean[i] - 1.0
        y = y - y.mean()
        gram = x.T @ x
        if seen.sum() >= n_coef + 3 and np.linalg.matrix_rank(gram) == n_coef:
            coef = np.linalg.solve(gram, x.T @ y)
            s2 = max(float(np.sum((y - x @ coef) ** 2)) / (seen.sum() - n_coef - 1), 1e-12)
            p2 = coef @ coef / n_coef - s2 * np.trace(np.linalg.inv(gram)) / n_coef
        else:  # too few runs to separate the slopes: the prior's scale
            s2, p2 = max(float(y @ y) / max(seen.sum(), 1), 1e-12), _PRIOR_SCALE**2
        prec = gram / s2 + np.eye(n_coef) / max(p2, 1e-4)
        chol = np.linalg.cholesky(prec)
        whiten[i] = np.linalg.inv(chol).T
        first[i] = np.linalg.solve(prec, x.T @ y / s2)
        half_square = 0.5 * (x @ first[i]) ** 2
        shear[i] = np.linalg.lstsq(x, half_square - half_square.mean(), rcond=None)[0]
    return {WHITEN: whiten, START: first, SHEAR: shear}


def pooled_logp(value, mu, sd, family_sd, global_sd, member, w):
    """Log density of whitened contrasts ``gamma`` (K, P) whose ``R = W gamma - mu`` (W: (K,
    P, P), one per task) has independent columns ``R_p ~ Normal(0, Sigma)``, ``Sigma =
    global_sd^2 11' + family_sd^2 Z Z' + diag(sd^2)`` (Z = ``member``, the (K, G) family
    indicator): the tasks' slopes with the global and family slopes integrated out, times
    |det W_i| (the change of variables; each W_i is triangular). Sigma^-1 and log det Sigma by
    the Woodbury identity: only a (G + 1) square matrix is factorised."""
    dev = pt.matmul(w, value[..., None])[..., 0] - mu  # (K, P)
    n_eval, n_coef = dev.shape[-2], dev.shape[-1]
    var = sd**2  # (K,)
    u = pt.concatenate([global_sd * pt.ones((n_eval, 1)), family_sd * member], axis=1)
    u_scaled = u / var[:, None]  # D^-1 U
    inner = pt.eye(u.shape[1]) + pt.dot(u.T, u_scaled)  # I + U' D^-1 U
    chol = pt.linalg.cholesky(inner)
    proj = pt.linalg.solve_triangular(chol, pt.dot(u_scaled.T, dev), lower=True)
    quad = pt.sum(dev**2 / var[:, None]) - pt.sum(proj**2)
    logdet = n_coef * (pt.sum(pt.log(var)) + 2.0 * pt.sum(pt.log(pt.diagonal(chol))))
    jacobian = pt.log(pt.abs(pt.diagonal(w, axis1=-2, axis2=-1))).sum()
    return -0.5 * (quad + logdet + n_eval * n_coef * np.log(2.0 * np.pi)) + jacobian


def pooled_random(mu, sd, family_sd, global_sd, member, w, rng=None, size=None):
    """Prior draws of the whitened contrasts: global, family and task terms drawn, summed,
    shifted by ``mu`` and unwhitened (``gamma = W^-1 (R + mu)``)."""
    mu, sd, member, w = (np.asarray(v, float) for v in (mu, sd, member, w))
    n_eval, n_coef = mu.shape
    dev = (
        rng.normal(0.0, float(global_sd), (1, n_coef))
        + member @ rng.normal(0.0, float(family_sd), (member.shape[1], n_coef))
        + rng.normal(0.0, 1.0, (n_eval, n_coef)) * sd[:, None]
    )
    return np.linalg.solve(w, (dev + mu)[..., None])[..., 0]


def global_scale(ctx) -> float:
    """The global slopes' prior scale: ``b_mu`` must be a ZeroSumNormal with a number for
    ``sigma`` (it is integrated out, :func:`pooled_logp`)."""
    prior = ctx.priors["b_mu"]
    sigma = prior.params.get("sigma", 1.0)
    if prior.dist != "ZeroSumNormal" or not isinstance(sigma, (int, float)):
        from bayesmix.errors import SpecError

        raise SpecError(
            f"law 'tasks' needs prior b_mu = ZeroSumNormal with a number for sigma, got {prior}",
            hint='keep dist = "ZeroSumNormal"',
        )
    return float(sigma)


class Tasks(M4):
    """M4 per task with family-pooled slopes (see the module docstring)."""

    name = "tasks"
    description = "M4 per downstream task, slopes pooled by task family"
    priors = TASKS_PRIORS
    model = "tasks"
    hierarchy_keys: ClassVar[tuple[str, ...]] = ("families",)

    has_noncentered = False  # whitened contrasts of its own; parameterization unused

    def build(self, ctx):
        """M4's block at the runs' mean shares (:func:`bayesmix.laws.m4.centred_block`) with
        the slopes of :meth:`_slopes`."""
        return centred_block(ctx, self._slopes)

    def data_arrays(self, r, losses, loss_mean, loss_scale) -> dict:
        """The runs' mean shares and the slopes' preconditioner (:func:`slope_geometry`),
        refreshed with every refit."""
        return {
            SHARE_CENTER: np.asarray(r, float).mean(axis=0),
            **slope_geometry(r, losses, loss_mean),
        }

    @staticmethod
    def _slopes(ctx, rho):
        """Relative slopes ``b`` (K, M) of the module docstring's hierarchy, and ``t = b /
        rho``.

        Sampled as ``b_i = H c_i`` with the contrasts ``c_i = H' b_raw_i`` (H: orthonormal
        zero-sum basis, (M, M-1)). For the isotropic Normals of the hierarchy each column of
        the contrasts across tasks is Normal(0, Sigma) with ``b_mu`` and ``B`` integrated out
        (:func:`pooled_logp`); the row means of ``b_raw`` and ``B``, which the law never sees,
        are integrated out too, so every other variable has the density it had with ``b_raw``,
        ``b_mu`` and ``B`` sampled. The contrasts are whitened and sheared per task
        (:func:`slope_geometry`): ``c_i + a_i / rho_i = c0_i + W_i gamma_i``, ``gamma``
        (``b_white``) sampled; a unit-Jacobian shear and a constant linear map.

        Why (Olmix's swarm, 19 tasks, 96 runs x 24 domains, 2 chains x 200 draws after 300
        tuning): with ``b_raw``, ``b_mu``, ``B`` sampled, 914 leapfrog steps per draw (the
        maximum tree depth at most draws), R-hat 1.57; whitened with ``b_mu``, ``B``
        integrated out, 600 steps, R-hat 1.10, the worst mixing a spread per task (``log
        b_sigma_i ~ Normal(log b_sigma, 0.5)``, a funnel: each task's slopes are about as
        large as their standard errors); with one ``b_sigma`` for all tasks, 109 steps, no
        draw at the maximum depth, E-BFMI 0.73."""
        fams, idx = family_index(ctx.eval_domains, ctx.hierarchy.get("families"))
        model = pm.modelcontext(None)
        basis = zero_sum_basis(len(ctx.train_domains))  # (M, P)
        if CONTRAST_DIM not in model.coords:
            model.add_coord(CONTRAST_DIM, [f"contrast{j}" for j in range(1, basis.shape[1] + 1)])
        member = np.zeros((len(idx), len(fams)))
        member[np.arange(len(idx)), idx] = 1.0
        mean = pt.zeros((len(idx), basis.shape[1]))
        if ctx.diagonal is not None:
            mean = ctx.prior("diag_mu") * pt.as_tensor(ctx.diagonal @ basis)
        w, first = ctx.inputs[WHITEN], ctx.inputs[START]
        sheared = ctx.inputs[SHEAR] / rho[:, None]  # (K, P)
        white = pm.CustomDist(
            "b_white",
            mean + sheared - first,
            pt.ones(len(idx)) * ctx.prior("b_sigma"),
            ctx.prior("b_family_sigma"),
            global_scale(ctx),
            member,
            w,
            logp=pooled_logp,
            random=pooled_random,
            # chains start at the ridge fit c0 (gamma = 0), not at a jittered prior mean
            support_point=lambda rv, size, *params: pt.zeros(rv.shape),
            signature="(k,p),(k),(),(),(k,g),(k,p,p)->(k,p)",
            dims=("eval_domain", CONTRAST_DIM),
        )
        contrasts = first + pt.matmul(w, white[..., None])[..., 0] - sheared
        b = pm.Deterministic("b", pt.dot(contrasts, basis.T), dims=("eval_domain", "train_domain"))
        return pm.Deterministic("t", b / rho[:, None], dims=("eval_domain", "train_domain"))
