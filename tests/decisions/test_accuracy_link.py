"""The loss-to-accuracy link, validated on simulated (loss, accuracy) pairs from a known
sigmoid (the swarm has no accuracies)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayesmix import errors
from bayesmix.decisions.accuracy_link import AccuracyLink, fit_link, read_links

TRUE = AccuracyLink(floor=0.25, ceiling=0.85, midpoint=1.6, width=0.12)


def _pairs(n=80, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    loss = rng.uniform(1.2, 2.0, n)
    return loss, np.clip(TRUE(loss) + noise * rng.standard_normal(n), 0, 1)


@pytest.mark.parametrize("floor", [None, 0.25])
def test_the_link_recovers_a_known_sigmoid(floor):
    loss, acc = _pairs()
    link = fit_link(loss, acc, floor=floor)
    # 80 pairs with accuracy noise 0.01 across the whole transition: the curve is pinned to
    # about the noise level everywhere (checked on a grid), its parameters to a few percent
    grid = np.linspace(1.2, 2.0, 50)
    assert np.abs(link(grid) - TRUE(grid)).max() < 0.02
    assert link.midpoint == pytest.approx(1.6, abs=0.03)
    assert link.rmse == pytest.approx(0.01, abs=0.004)


def test_loss_draws_become_accuracy_changes_in_points():
    link = fit_link(*_pairs(), floor=0.25)
    draws = np.array([1.55, 1.6, 1.65])
    change = link.change(draws, 1.6)
    # lower loss, higher accuracy; at the midpoint the slope is (0.85 - 0.25) / (4 x 0.12)
    assert change[0] > 0 > change[2]
    assert change[0] == pytest.approx(0.05 * 0.6 / (4 * 0.12), rel=0.1)


def test_change_intervals_carry_the_links_own_uncertainty():
    """With the losses known exactly (every draw the same), a change's interval is the link's
    bootstrap uncertainty alone: over 40 simulated swarms of 30 pairs (accuracy noise 0.02)
    its 90% interval holds the true change in 35 of 40 (0.85-0.875 measured on other seed
    blocks, percentile bootstrap); >= 0.75 is 2.5 binomial sd below 0.9 at n = 40. Without the
    bootstrap (n_boot=0) the interval has no width and would cover nothing."""
    draws = 400
    new, old = np.full(draws, 1.55), np.full(draws, 1.65)
    truth = TRUE(1.55) - TRUE(1.65)
    hits = []
    for rep in range(40):
        link = fit_link(*_pairs(n=30, noise=0.02, seed=100 + rep), floor=0.25, random_seed=rep)
        assert link.draws is not None and link.draws.shape == (100, 4)
        lo, hi = np.quantile(link.draw_accuracy(new) - link.draw_accuracy(old), [0.05, 0.95])
        hits.append(lo <= truth <= hi)
    assert np.mean(hits) >= 0.75
    fixed = fit_link(*_pairs(n=30, noise=0.02, seed=100), floor=0.25, n_boot=0)
    assert fixed.draws is None
    assert np.ptp(fixed.draw_accuracy(new) - fixed.draw_accuracy(old)) == 0


def test_too_few_pairs_or_percentages_are_refused():
    with pytest.raises(errors.OptionError, match="mmlu: 3 .* pairs"):
        fit_link([1, 2, 3], [0.3, 0.4, 0.5], task="mmlu")
    with pytest.raises(errors.OptionError, match="accuracies must be in \\[0, 1\\]"):
        fit_link(np.arange(6.0), np.full(6, 50.0))


def _links_file(tmp_path, rows, name="links.csv"):
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_a_links_file_fits_one_link_per_task(tmp_path):
    loss, acc = _pairs(n=40)
    rows = [{"task": "mmlu", "loss": x, "accuracy": y, "floor": 0.25} for x, y in zip(loss, acc)]
    loss2, acc2 = _pairs(n=30, seed=1)
    rows += [{"task": "arc", "loss": x, "accuracy": y, "floor": None} for x, y in zip(loss2, acc2)]
    rows.append({"task": "arc", "loss": 1.5, "accuracy": None, "floor": None})  # skipped
    links = read_links(_links_file(tmp_path, rows), tasks=["arc", "mmlu", "hellaswag"])
    assert list(links) == ["mmlu", "arc"]  # file order
    # the file's pairs give the same links as fit_link on the same arrays (floor per task)
    assert links["mmlu"] == fit_link(loss, acc, floor=0.25)
    assert links["arc"] == fit_link(loss2, acc2)
    np.testing.assert_array_equal(links["arc"].draws, fit_link(loss2, acc2).draws)  # seeded
    assert links["mmlu"].floor == 0.25 and links["arc"].floor != 0.25


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda f: f.drop(columns="accuracy"), "links.csv, row 1: no column 'accuracy'"),
        (
            lambda f: f.assign(loss=f["loss"].astype(object).where(f.index != 3, "n/a?")),
            "links.csv, row 5, column 'loss': 'n/a?' is not a number",
        ),
        (
            lambda f: f.assign(accuracy=f["accuracy"].where(f.index != 2, 62.0)),
            "links.csv, row 4, column 'accuracy': accuracy 62 is outside [0, 1]",
        ),
        (
            lambda f: f.assign(task=f["task"].where(f.index < 6, "mmlu_z")),
            "links.csv, row 8, column 'task': task 'mmlu_z' is not in the posterior",
        ),
        (
            lambda f: f.assign(task=f["task"].where(f.index < 8, "arc")),
            "links.csv, row 10, column 'task': task 'arc' has 4 (loss, accuracy) pairs; "
            "a link needs 5",
        ),
        (
            lambda f: f.assign(floor=np.where(f.index == 1, 0.2, 0.25)),
            "links.csv, row 2, column 'floor': task 'mmlu' has 2 different floors",
        ),
    ],
)
def test_bad_links_files_name_the_row_and_column(tmp_path, edit, message):
    loss, acc = _pairs(n=12)
    frame = pd.DataFrame({"task": "mmlu", "loss": loss, "accuracy": acc})
    path = _links_file(tmp_path, edit(frame))
    with pytest.raises(errors.BayesmixError) as err:
        read_links(path, tasks=["mmlu", "arc"])
    assert str(err.value).startswith(f"{tmp_path / message}")
    assert "\n" not in str(err.value)


FITTED = {"task": ["mmlu", "arc"], "floor": [0.25, 0.0], "ceiling": [0.85, 0.9],
          "midpoint": [1.6, 2.0], "width": [0.12, 0.3]}  # fmt: skip


def test_a_file_of_fitted_links_gives_fixed_links(tmp_path):
    """Links fitted elsewhere (one row per task: floor, ceiling, midpoint, width [, rmse])
    are read as they are: fixed links, whose accuracies are the formula's."""
    links = read_links(_links_file(tmp_path, FITTED), tasks=["arc", "mmlu"])
    mmlu = links["mmlu"]
    assert list(links) == ["mmlu", "arc"]
    assert (mmlu.floor, mmlu.ceiling, mmlu.midpoint, mmlu.width) == (0.25, 0.85, 1.6, 0.12)
    assert links["mmlu"].draws is None and np.isnan(links["mmlu"].rmse)
    np.testing.assert_allclose(links["arc"](2.0), 0.45)  # the midpoint: halfway up
    with_rmse = read_links(_links_file(tmp_path, {**FITTED, "rmse": [0.01, 0.02]}))
    assert with_rmse["arc"].rmse == 0.02


@pytest.mark.parametrize(
    "change,message",
    [
        ({"width": [0.12, -0.3]}, "row 3, column 'width': width must be a positive number"),
        ({"ceiling": [0.85, 0.0]}, "row 3, column 'ceiling': ceiling must be in (floor, 1]"),
        ({"floor": [1.0, 0.0]}, "row 2, column 'floor': floor must be in [0, 1)"),
        ({"midpoint": [1.6, None]}, "row 3, column 'midpoint': midpoint must be a number"),
        ({"task": ["mmlu", "mmlu"]}, "row 3, column 'task': task 'mmlu' is listed twice"),
        ({"task": ["mmlu", "hella"]}, "row 3, column 'task': task 'hella' is not in the posterior"),
    ],
)
def test_bad_fitted_links_name_the_row_and_column(tmp_path, change, message):
    path = _links_file(tmp_path, {**FITTED, **change})
    with pytest.raises(errors.BayesmixError) as err:
        read_links(path, tasks=["mmlu", "arc"])
    assert str(err.value).startswith(f"{path}, {message}"), str(err.value)


def test_a_missing_links_file_is_named(tmp_path):
    with pytest.raises(errors.UnreadableFileError, match="nope.csv: file not found"):
        read_links(tmp_path / "nope.csv")
