"""The tasks law: task families (name rule, specification tables) and a small fit in which a
family's shared slopes are learned."""

from __future__ import annotations

import numpy as np
import pytest

from bayesmix import errors
from bayesmix.laws.tasks import default_family, family_index, task_families
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
    assert list(tree["sampler_variables"]["b_family_z"].coords["task_family"].values) == [
        "a",
        "b",
    ]
    t = post.law_params()["t"].mean(axis=0)  # (K, M)
    # family a is helped most by d0, family b by d2 (slopes differ by 2.25 per unit share,
    # the fit's posterior sd of a slope is ~0.1 here, so the order cannot flip by chance)
    assert (t[:3].argmin(axis=1) == 0).all() and (t[3:].argmin(axis=1) == 2).all()
    # and the slopes are recovered to within 0.5 per unit share
    assert np.abs(t - truth["t"]).max() < 0.5
