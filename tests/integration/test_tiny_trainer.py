"""examples/tiny_trainer.py: the example training job of ``bayesmix run``.

Its losses are real held-out cross-entropies of a model learned from the sampled mixture: more
tokens of a domain lower that domain's loss, the other domains' shares move it (transfer), the
same seed gives the same losses, and the CLI writes one row that ``bayesmix.data.loaders.load``
reads.

The trainer is deterministic (fixed seeds, sorted and hashed document order), so every
comparison below gives the same answer on every run with the same Python; each margin is a
fraction of the gap measured with Python 3.12 (docs/tiny_trainer.md), so that another Python
version's slightly different standard library text does not flip it.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bayesmix.data.loaders import load

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "tiny_trainer.py"


@pytest.fixture(scope="module")
def tt():
    """The example imported by path (examples/ is not a package); corpora built once here."""
    spec = importlib.util.spec_from_file_location("tiny_trainer", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.corpora()
    return module


def run_trainer(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    """The trainer as bayesmix runs it: a subprocess; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


# ---------------------------------------------------------------------------------- learning
@pytest.mark.parametrize("domain", ["python", "docstrings", "manual", "unicode"])
def test_more_tokens_of_a_domain_lower_its_loss(tt, domain):
    # a pure-domain mixture at 30k, 100k and 300k characters (each sample extends the smaller
    # one: the same shuffled chunks, more of them). Measured drops: 0.13-0.23 nats from 30k to
    # 100k, 0.05-0.13 from 100k to 300k (docs/tiny_trainer.md); the margins are 0.05 and 0.02.
    losses = [tt.train({domain: 1.0}, tokens)[domain] for tokens in (30_000, 100_000, 300_000)]
    assert losses[0] - losses[1] > 0.05
    assert losses[1] - losses[2] > 0.02
    assert losses[2] < math.log(tt.VOCAB) / 2  # far better than guessing uniformly (4.85 nats)


@pytest.mark.parametrize(
    ("domain", "other"), [("python", "manual"), ("unicode", "docstrings"), ("manual", "python")]
)
def test_a_larger_share_lowers_the_domains_own_loss(tt, domain, other):
    # at a fixed budget of 200k characters, 10% -> 50% of the domain; measured drops are
    # 0.19 (python), 0.44 (unicode), 0.26 (manual) nats, the margin 0.05
    low = tt.train({domain: 0.1, other: 0.9}, 200_000)[domain]
    high = tt.train({domain: 0.5, other: 0.5}, 200_000)[domain]
    assert low - high > 0.05


def test_transfer_between_domains(tt):
    # docstrings never seen in training: a model of Python source predicts them far better
    # than a model of the Unicode table (measured 2.08 vs 5.91 nats) and better than a uniform
    # guess (ln 128 = 4.85 nats); the Unicode table is the other way round (5.28 vs 1.26)
    from_python = tt.train({"python": 1.0}, 100_000)
    from_unicode = tt.train({"unicode": 1.0}, 100_000)
    assert from_python["docstrings"] < math.log(tt.VOCAB) - 2.0
    assert from_unicode["docstrings"] - from_python["docstrings"] > 2.0
    assert from_python["unicode"] - from_unicode["unicode"] > 2.0


def test_the_other_shares_move_a_domains_loss(tt):
    # python's own share fixed at 50%: the other half as docstrings (English and code) helps
    # python more than the Unicode table; measured 1.52 vs 1.57 nats at 300k characters.
    # And a domain with share 0 has a loss that depends on the mixture of the others.
    with_docs = tt.train({"python": 0.5, "docstrings": 0.5}, 300_000)
    with_unicode = tt.train({"python": 0.5, "unicode": 0.5}, 300_000)
    assert with_unicode["python"] - with_docs["python"] > 0.02
    assert with_unicode["manual"] - with_docs["manual"] > 0.3  # measured 2.00 vs 1.69


def test_probabilities_sum_to_one(tt):
    # the losses are cross-entropies of a proper distribution: for seen and unseen contexts
    # and every order, P(w | context) summed over the 128 symbols is 1 (rounding only)
    symbols, position = tt.sample({"python": 0.5, "manual": 0.5}, 50_000, seed=0)
    held = tt.corpora()["docstrings"][1]
    contexts = [held[1000 : 1000 + tt.SKIP], held[5000 : 5000 + tt.SKIP]]
    contexts.append(np.arange(1, tt.SKIP + 1, dtype=np.uint8))  # control characters: unseen
    for order in (1, 3, 5):
        model = tt.KneserNey(symbols, position, order)
        for ctx in contexts:
            texts = np.column_stack(
                [np.tile(ctx, (tt.VOCAB, 1)), np.arange(tt.VOCAB, dtype=np.uint8)]
            )
            total = sum(math.exp(model.log_probs(text)[0]) for text in texts)
            assert total == pytest.approx(1.0, abs=1e-9)


def test_same_seed_same_losses(tt):
    mixture = {"python": 0.3, "docstrings": 0.3, "manual": 0.2, "unicode": 0.2}
    first = tt.train(mixture, 50_000, seed=4)
    assert tt.train(mixture, 50_000, seed=4) == first  # exactly equal
    assert tt.train(mixture, 50_000, seed=5) != first  # the seed picks other chunks


def test_domains_and_bad_mixtures_in_python(tt):
    assert tt.domains() == ["python", "docstrings", "manual", "unicode"]
    with pytest.raises(tt.TrainerError, match="unknown domain.*'c'.*known: python, docstrings"):
        tt.train({"python": 0.5, "c": 0.5}, 1000)
    with pytest.raises(tt.TrainerError, match="sum to 0.9"):
        tt.train({"python": 0.9}, 1000)
    with pytest.raises(tt.TrainerError, match="tokens must be an integer"):
        tt.train({"python": 1.0}, 0)


# ---------------------------------------------------------------------------------- the CLI
def test_cli_writes_a_run_table_row(tt, tmp_path):
    mixture = {"python": 0.4, "docstrings": 0.3, "manual": 0.2, "unicode": 0.1}
    (tmp_path / "mixture.json").write_text(json.dumps(mixture))
    out = tmp_path / "r007" / "result.csv"
    args = ["--run", "r007", "--mixture-file", str(tmp_path / "mixture.json"), "--out", str(out)]
    proc = run_trainer(*args, "--tokens", "60000", "--seed", "2")
    assert proc.returncode == 0, proc.stderr
    assert "run r007: 60000 characters" in proc.stdout
    assert sorted(os.listdir(out.parent)) == ["result.csv"]  # no temporary file left

    table = load(out)
    tidy = table.to_tidy()
    assert list(tidy["run"]) == ["r007"]
    assert list(table.train_domains) == tt.domains()
    assert list(table.eval_domains) == tt.domains()
    assert tidy["tokens"].iloc[0] == 60_000
    for domain, share in mixture.items():
        assert tidy[f"mix.{domain}"].iloc[0] == share
    # the subprocess built its own corpora: the same losses as in this process
    expected = tt.train(mixture, 60_000, seed=2)
    for domain, loss in expected.items():
        assert tidy[f"loss.{domain}"].iloc[0] == pytest.approx(loss, rel=1e-12)


def test_cli_takes_the_loops_size_and_steps(tt, tmp_path):
    """--n-params is the n-gram order and is written as the n_params column; --steps trains on
    that many chunks: the same losses as the order and tokens given directly."""
    mixture = {"python": 0.5, "manual": 0.5}
    out = tmp_path / "result.csv"
    args = ["--run", "r1", "--mixture", json.dumps(mixture), "--out", str(out)]
    proc = run_trainer(*args, "--n-params", "3", "--steps", "100")
    assert proc.returncode == 0, proc.stderr
    tidy = load(out).to_tidy()
    assert tidy["n_params"].iloc[0] == 3
    assert tidy["tokens"].iloc[0] == 100 * tt.CHUNK
    expected = tt.train(mixture, 100 * tt.CHUNK, seed=0, order=3)
    assert tidy["loss.python"].iloc[0] == pytest.approx(expected["python"], rel=1e-12)
    bad = run_trainer(*args, "--n-params", "9")
    assert bad.returncode == 2 and "--n-params" in bad.stderr


@pytest.mark.parametrize(
    ("mixture", "message"),
    [
        ('{"python": 0.5, "manual": 0.4}', "sum to 0.9"),
        ('{"python": 0.5, "pyhton": 0.5}', "unknown domain(s) 'pyhton'"),
        ('{"python": 1.5, "manual": -0.5}', "must be finite, >= 0"),
        ('{"python": "half", "manual": 0.5}', "not a number"),
        ("[0.5, 0.5]", "must be a non-empty JSON object"),
        ("{python: 1}", "not JSON"),
    ],
)
def test_cli_refuses_a_bad_mixture(tmp_path, mixture, message):
    out = tmp_path / "result.csv"
    proc = run_trainer("--run", "r1", "--mixture", mixture, "--out", str(out))
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not out.exists()


def test_cli_lists_domains_and_names_known_ones():
    proc = run_trainer("--list-domains")
    assert proc.returncode == 0
    assert proc.stdout.split() == ["python", "docstrings", "manual", "unicode"]
    proc = run_trainer("--run", "r1", "--mixture", '{"c": 1}', "--out", "never.csv")
    assert proc.returncode == 2
    assert "known: python, docstrings, manual, unicode" in proc.stderr


def test_fail_once_hook(tmp_path):
    marker, out = tmp_path / "failed-once", tmp_path / "result.csv"
    args = ["--run", "r1", "--mixture", '{"manual": 1}', "--out", str(out), "--tokens", "20000"]
    env = {"TINY_TRAINER_FAIL_ONCE": str(marker)}
    first = run_trainer(*args, env=env)
    assert first.returncode == 3 and "failing once on purpose" in first.stderr
    assert marker.exists() and not out.exists()
    second = run_trainer(*args, env=env)  # the retry: the marker exists, so it trains
    assert second.returncode == 0, second.stderr
    assert load(out).to_tidy()["run"].tolist() == ["r1"]


def test_sleep_hook_needs_a_number(tmp_path):
    out = tmp_path / "result.csv"
    args = ["--run", "r1", "--mixture", '{"manual": 1}', "--out", str(out)]
    proc = run_trainer(*args, env={"TINY_TRAINER_SLEEP": "soon"})
    assert proc.returncode == 2 and "TINY_TRAINER_SLEEP" in proc.stderr
    assert not out.exists()


def test_a_failed_write_leaves_nothing(tt, tmp_path, monkeypatch):
    out = tmp_path / "result.csv"
    losses = dict.fromkeys(tt.domains(), 1.5)

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(tt.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        tt.write_result(out, "r1", 1000, {"python": 1.0}, losses)
    assert os.listdir(tmp_path) == []  # neither a partial result nor the temporary file
