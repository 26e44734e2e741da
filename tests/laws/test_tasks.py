"""The tasks law: task families (name rule, specification tables) and a small fit in which a
family's shared slopes are learned."""

from __future__ import annotations

import numpy as np
import pytest

from bayesmix import errors
from bayesmix.laws.m4log import zero_sum_basis
from bayesmix.laws.tasks import (
    default_family,
    family_index,
    pooled_logp,
    pooled_random,
    slope_geometry,
    task_families,
)
from bayesmix.model.spec import load_spec

NAMES = [
    "mmlu_anatomy:rc::olmes",
    "mmlu_high_school_biology:rc::olmes",
    "minerva_math_algebra::olmes",
    "minerva_math_geometry::olmes",
    "basic_skills:rc::olmes",
    "basic_skills_coding:rc::olmes",
    "mt_mbpp_v2fix:go",
    "mt_mbpp_v2fix:c",
    "mbpp:3shot::none",
    "hellaswag:rc::olmes",
]


@pytest.mark.parametrize(
    ("task", "family"),
    [
        ("mmlu_high_school_biology:rc::olmes", "mmlu"),
        ("minerva_math_geometry::olmes", "minerva_math"),  # the longest shared head
        ("basic_skills:rc::olmes", "basic_skills"),  # the whole stem, shared with _coding
        ("mt_mbpp_v2fix:go", "mt_mbpp_v2fix"),
        ("mbpp:3shot::none", "mbpp"),  # not mt_mbpp's family
        ("hellaswag:rc::olmes", "hellaswag"),  # alone: its own family
    ],
)
def test_default_family_is_the_shared_head_of_the_name(task, family):
    assert default_family(task, NAMES) == family


def test_given_families_win_by_name_or_glob():
    fams = task_families(NAMES, {"mmlu_*": "knowledge", "hellaswag:rc::olmes": "knowledge"})
    assert fams["mmlu_anatomy:rc::olmes"] == fams["hellaswag:rc::olmes"] == "knowledge"
    assert fams["mbpp:3shot::none"] == "mbpp"
    order, idx = family_index(NAMES[:4])
    assert order == ["mmlu", "minerva_math"] and idx == [0, 0, 1, 1]


def test_families_in_a_specification_are_checked_and_written_back():
    spec = load_spec("tasks").with_hierarchy(families={"mmlu_*": "knowledge"})
    assert spec.hierarchy["families"] == {"mmlu_*": "knowledge"}
    assert '"mmlu_*" = "knowledge"' in spec.to_toml()
    with pytest.raises(errors.SpecError, match="hierarchy families must be a table"):
        load_spec("tasks").with_hierarchy(families=["mmlu"])
    with pytest.raises(errors.SpecError, match="unknown hierarchy key 'families'"):
        load_spec("default").with_hierarchy(families={"a": "b"})


@pytest.mark.slow
def test_a_small_family_fit_recovers_each_familys_best_domain(tasks_fit):
    post, truth = tasks_fit
    tree = post.tree
    assert tree["sampler_variables"]["b_white"].sizes["task_contrast"] == len(truth["t"][0]) - 1
    t = post.law_params()["t"].mean(axis=0)  # (K, M)
    # family a is helped most by d0, family b by d2 (slopes differ by 2.25 per unit share,
    # the fit's posterior sd of a slope is ~0.1 here, so the order cannot flip by chance)
    assert (t[:3].argmin(axis=1) == 0).all() and (t[3:].argmin(axis=1) == 2).all()
    # and the slopes are recovered to within 0.5 per unit share
    assert np.abs(t - truth["t"]).max() < 0.5


# A small pooled problem: 5 tasks in families [0, 0, 0, 1, 1] over 4 training domains (3
# contrasts), task spreads and family/global scales of the order of the law's priors.
MEMBER = np.array([[1, 0], [1, 0], [1, 0], [0, 1], [0, 1]], float)
SD = np.array([0.1, 0.2, 0.15, 0.3, 0.05])
FAMILY_SD, GLOBAL_SD = 0.25, 0.5


def _sigma():
    """Covariance across tasks of one contrast column under the pooled prior."""
    return GLOBAL_SD**2 + FAMILY_SD**2 * MEMBER @ MEMBER.T + np.diag(SD**2)


def test_pooled_logp_is_the_marginal_normal_times_the_whitening_jacobian():
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(0)
    k, p = MEMBER.shape[0], 3
    w = np.triu(rng.normal(size=(k, p, p))) + 2.0 * np.eye(p)  # triangular, as chol^-T is
    gamma, mu = rng.normal(size=(k, p)), rng.normal(size=(k, p))
    got = pooled_logp(gamma, mu, SD, FAMILY_SD, GLOBAL_SD, MEMBER, w).eval()
    dev = np.einsum("kpq,kq->kp", w, gamma) - mu
    want = sum(multivariate_normal(np.zeros(k), _sigma()).logpdf(dev[:, j]) for j in range(p))
    want += sum(np.log(abs(np.linalg.det(wi))) for wi in w)
    assert got == pytest.approx(want, rel=1e-10)


def test_pooled_prior_is_the_family_hierarchy_with_global_and_family_slopes_integrated_out():
    """The law's prior b_raw_i ~ Normal(b_mu + B_g(i), sd_i) (b_mu ZeroSumNormal, B_g Normal)
    seen through its zero-sum contrasts H' b_raw: each column across tasks is Normal(0,
    Sigma) (what pooled_logp evaluates), and pooled_random draws the same."""
    rng = np.random.default_rng(1)
    k, m, n = MEMBER.shape[0], 4, 100_000
    h = zero_sum_basis(m)
    b_mu = rng.normal(0.0, GLOBAL_SD, (n, 1, m))
    b_mu -= b_mu.mean(axis=-1, keepdims=True)  # a ZeroSumNormal of scale GLOBAL_SD
    fam = rng.normal(0.0, FAMILY_SD, (n, 2, m))
    raw = b_mu + MEMBER @ fam + rng.normal(size=(n, k, m)) * SD[:, None]
    contrasts = raw @ h  # (n, K, P)
    w = np.broadcast_to(np.eye(3), (k, 3, 3))
    drawn = np.stack(
        [
            pooled_random(np.zeros((k, 3)), SD, FAMILY_SD, GLOBAL_SD, MEMBER, w, rng=rng)
            for _ in range(20_000)
        ]
    )
    for sample in (contrasts, drawn):
        for j in range(3):
            cov = np.cov(sample[:, :, j], rowvar=False)
            # the largest entry is 0.4; the sd of a covariance estimate from >= 20,000 draws
            # is below 0.4 * sqrt(2 / 20000) = 0.004, so 0.02 is 5 sd
            assert np.abs(cov - _sigma()).max() < 0.02


def test_slope_geometry_starts_each_task_at_its_contrasts():
    """One triangular whitening per task, and the start (the ridge fit of the linearised law)
    close to the true contrasts of tasks measured with little noise, strong or weak."""
    rng = np.random.default_rng(2)
    r = rng.dirichlet(np.ones(4), size=60)
    contrast = np.array([[0.3, -0.2, 0.1], [0.0, 0.05, -0.02]])  # a strong and a weak task
    x = (r - r.mean(axis=0)) @ zero_sum_basis(4)
    losses = 2.0 * (1.0 + x @ contrast.T) + rng.normal(0.0, 1e-3, (60, 2))
    losses[:5, 1] = np.nan  # a missing cell: that task's fit uses its observed runs
    geo = slope_geometry(r, losses, np.nanmean(losses, axis=0))
    w, first = geo["tasks_whiten"], geo["tasks_start"]
    assert w.shape == (2, 3, 3) and np.allclose(np.tril(w[0], -1), 0.0)
    # relative losses L / mean - 1 put the contrasts within 2% of the truth (noise 1e-3 on 2)
    assert np.abs(first[0] - contrast[0]).max() < 0.02
    assert np.abs(first[1] - contrast[1]).max() < 0.02
