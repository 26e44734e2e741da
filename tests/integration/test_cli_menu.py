"""The proxy menu from the command line (``--menu``/``--target-scale`` of ``bayesmix init`` and
``propose``) and a multi-fidelity loop across sizes, as a user runs it: in-process through the
CLI's ``main`` (conftest.run_cli). The loop test trains real tiny models
(examples/tiny_trainer.py: ``--n-params`` is the n-gram order, ``--steps`` chunks of 256
characters) launched by ``bayesmix run`` with each run's size and steps in the template.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli

from bayesmix.loop.ledger import Ledger
from bayesmix.posterior.posterior import Posterior

ROOT = Path(__file__).resolve().parents[2]
TRAINER = ROOT / "examples" / "tiny_trainer.py"
TINY_DOMAINS = "python,docstrings,manual,unicode"
#: Three sizes (n-gram orders), the largest trained twice as long; one step = 256 characters.
TINY_MENU = ["--menu", "2@200,3@200,4@400", "--target-scale", "5@4000", "--tokens-per-step", 256]
#: The smallest MCMC the loop tests use (tests/loop/test_run_loop.py's fixture).
MCMC = ["--draws", 100, "--tune", 100, "--chains", 2]


def bayesmix(*args, cwd):
    return run_cli(*args, cwd=cwd)


def fidelity(path: Path):
    with Ledger.open(path) as led:
        return led.fidelity()


def test_menu_from_init_and_propose(tmp_path):
    """init records the menu; propose's initial design spreads over its sizes and lists size,
    steps, tokens and cost per run; status shows it; propose --menu replaces the menu and keeps
    the target scale and tokens per step."""
    done = bayesmix("init", "--ledger", "exp.db", "--domains", "a,b,c", *TINY_MENU, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "proxy menu (SIZE@STEPS=relative cost; 256 tokens per step): 2@200=1,3@200=1.5," in (
        done.stdout
    )
    done = bayesmix("propose", "--ledger", "exp.db", "-n", 3, "--model", "scaling", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    table = done.stdout.splitlines()[-4:]
    assert table[0].split()[:5] == ["run", "size", "steps", "tokens", "cost"]
    # each size's longest entry in turn; cost relative to the menu's cheapest entry
    assert [line.split()[1:5] for line in table[1:]] == [
        ["2", "200", "5.12e+04", "1"],
        ["3", "200", "5.12e+04", "1.5"],
        ["4", "400", "1.024e+05", "4"],
    ]
    handoff = pd.read_csv(tmp_path / "exp-round0.csv")
    assert list(handoff["n_params"]) == [2, 3, 4] and list(handoff["steps"]) == [200, 200, 400]
    # init's initial design for the default law (m4, one size): the largest entry, a note why
    argv = ["init", "--ledger", "m4.db", "--domains", "a,b,c", "--initial-design", 2]
    done = bayesmix(*argv, *TINY_MENU, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "note: law 'm4' fits one model size: the initial design is planned at the menu's " in (
        done.stdout
    )
    assert list(pd.read_csv(tmp_path / "m4-round0.csv")["n_params"]) == [4, 4]

    done = bayesmix("propose", "--ledger", "exp.db", "-n", 2, "--menu", "2@100,8@100", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "note: recorded: proxy menu (SIZE@STEPS=relative cost; 256 tokens per step): " in (
        done.stdout
    )
    fid = fidelity(tmp_path / "exp.db")
    np.testing.assert_array_equal(fid.menu.n_params, [2, 8])
    np.testing.assert_array_equal(fid.menu.tokens, [100 * 256, 100 * 256])
    assert fid.target == {"n_params": 5.0, "tokens": 4000 * 256.0}
    status = bayesmix("status", "--ledger", "exp.db", cwd=tmp_path)
    assert "proxy menu (SIZE@STEPS=relative cost; 256 tokens per step): 2@100=1,8@100=4; " in (
        status.stdout
    )
    assert "target 5 parameters, 1.024e+06 tokens" in status.stdout


@pytest.mark.parametrize(
    "command, args, fragment",
    [
        ("init", ["--menu", "70M@1e4,160X@1e4"], "--menu '160X@1e4': size '160X' is not a"),
        ("init", ["--menu", "70M@10000"], "--target-scale SIZE@STEPS"),
        ("init", ["--target-scale", "1B"], "--target-scale '1B': not SIZE@STEPS"),
        ("init", ["--menu", "2@9", "--tokens-per-step", "-1"], "--tokens-per-step -1.0 must be"),
        ("init", ["--tokens-per-step", "256"], "no menu and no target scale given to read at"),
        ("propose", ["--menu", "2@200,3@200.5"], "--menu '3@200.5': steps '200.5' is not a"),
        ("propose", ["--menu", "2@200=1,3@200"], "--menu '3@200' has no cost while other"),
        ("propose", ["--strategy", "target-info"], "law 'm4' has no input 'n_params'"),
        ("propose", ["--size", "9"], "--size '9' is not in the ledger's menu (entries: 2@200,"),
    ],
)
def test_bad_menu_is_one_line_exit_2_and_changes_nothing(tmp_path, command, args, fragment):
    if command == "propose":
        done = bayesmix("init", "--ledger", "exp.db", "--domains", "a,b", *TINY_MENU, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        before = fidelity(tmp_path / "exp.db")
    base = ["--ledger", "exp.db"] + (["--domains", "a,b"] if command == "init" else ["-n", 2])
    done = bayesmix(command, *base, *args, cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"bayesmix {command}: error: ") and fragment in lines[0], lines[0]
    if command == "init":
        assert not (tmp_path / "exp.db").exists()
    else:
        after = fidelity(tmp_path / "exp.db")
        assert after.target == before.target
        np.testing.assert_array_equal(after.menu.frame(), before.menu.frame())
        with Ledger.open(tmp_path / "exp.db") as led:
            assert led.runs().empty


@pytest.mark.slow
def test_loop_across_sizes_from_the_command_line(tmp_path, monkeypatch):
    """init with a menu -> run (the initial design at three sizes) -> propose target-info
    (a scaling fit on every run) -> run (sizes substituted) -> propose again: the ledger
    holds runs at several sizes with the planned n_params and steps, the trainer trained
    them at those sizes, and the last proposal comes from a fit on all of them."""
    monkeypatch.setenv("BAYESMIX_MAX_TIME", "0")  # one sampling per fit: small tests
    command = (
        f"{shlex.quote(sys.executable)} {shlex.quote(str(TRAINER))} --run {{run}} "
        "--mixture-file {mixture_file} --out {out} --n-params {n_params} --steps {steps}"
    )
    run = ["run", "--ledger", "exp.db", "--command", command, "--parallel", 2, "--quiet"]
    steps = [
        ["init", "--ledger", "exp.db", "--domains", TINY_DOMAINS, "--initial-design", 6,
         "--model", "scaling"],
        [*run, "--no-recommend"],
        ["propose", "--ledger", "exp.db", "-n", 3, "--strategy", "target-info",
         "--model", "scaling", *MCMC, "--quiet"],
        [*run, "--model", "scaling", *MCMC],
        ["propose", "--ledger", "exp.db", "-n", 2, "--strategy", "target-info",
         "--model", "scaling", *MCMC, "--quiet"],
    ]  # fmt: skip
    outputs = []
    for argv in steps:
        done = bayesmix(*argv, *(TINY_MENU if argv[0] == "init" else []), cwd=tmp_path)
        assert done.returncode == 0, (argv, done.stderr[-2000:])
        outputs.append(done.stdout)
    assert "round 1: proposed 3 runs by target-info" in outputs[2]
    # the end of the second run recommends at the ledger's target scale
    assert "vs the target (N=5 params, D=1.02e+06 tokens)" in outputs[3]

    with Ledger.open(tmp_path / "exp.db") as led:
        runs = led.runs().set_index("run")
        table = led.run_table()
        fits = led.fit_records()
    done = runs[runs["status"] == "completed"]
    assert len(done) == 9 and set(done["n_params"]) == {2, 3, 4}
    menu = {(2, 200), (3, 200), (4, 400)}
    assert set(zip(runs["n_params"], runs["steps"])) <= menu  # every run planned from the menu
    # the trainer trained each run at its planned size and steps: its result's n_params and
    # tokens (steps x 256 characters) are the plan
    final = table.final()
    trained = pd.DataFrame(
        {k: np.asarray(final.column(k), float) for k in ("n_params", "tokens")},
        index=[str(r) for r in final.runs],
    )
    np.testing.assert_array_equal(trained.loc[done.index, "n_params"], done["n_params"])
    np.testing.assert_array_equal(trained.loc[done.index, "tokens"], done["steps"] * 256)
    round2 = runs[runs["round"] == 2]
    assert len(round2) == 2 and (round2["strategy"] == "target-info").all()
    assert set(zip(round2["n_params"], round2["steps"])) <= menu
    # round 1 came from a fit on the 6 initial runs, round 2 from one on all 9
    assert fits[1]["n_runs"] == 6 and fits[2]["n_runs"] == 9
    post = Posterior.load(tmp_path / fits[2]["posterior"])
    fitted = post.fit_data()
    assert fitted.n_runs == 9 and set(fitted.column("n_params")) == {2, 3, 4}


def tiny_command() -> str:
    """The tiny trainer at each run's planned size and steps."""
    return (
        f"{shlex.quote(sys.executable)} {shlex.quote(str(TRAINER))} --run {{run}} "
        "--mixture-file {mixture_file} --out {out} --n-params {n_params} --steps {steps}"
    )


def test_run_records_the_menu_and_launches_at_its_sizes(tmp_path):
    """run takes propose's --menu/--target-scale/--tokens-per-step: recorded before the first
    launch, the initial design of a law over scale launched at the menu's sizes (the trainer
    trains at them); a later run giving only --target-scale keeps the menu and its tokens per
    step, and its --size plans its run at that size."""
    done = bayesmix("init", "--ledger", "exp.db", "--domains", TINY_DOMAINS, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run = ["run", "--ledger", "exp.db", "--command", tiny_command(), "--parallel", 2]
    run += ["--quiet", "--no-recommend"]
    done = bayesmix(*run, "-n", 3, "--model", "scaling", *TINY_MENU, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        "note: recorded: proxy menu (SIZE@STEPS=relative cost; 256 tokens per step): "
        "2@200=1,3@200=1.5,4@400=4; target 5 parameters, 1.024e+06 tokens"
    )
    fid = fidelity(tmp_path / "exp.db")
    np.testing.assert_array_equal(fid.menu.n_params, [2, 3, 4])
    np.testing.assert_array_equal(fid.menu.tokens, [200 * 256, 200 * 256, 400 * 256])
    with Ledger.open(tmp_path / "exp.db") as led:
        runs = led.runs().set_index("run")
        final = led.run_table().final()
    assert (runs["status"] == "completed").all() and len(runs) == 3
    assert list(zip(runs["n_params"], runs["steps"])) == [(2, 200), (3, 200), (4, 400)]
    trained = dict(zip(map(str, final.runs), np.asarray(final.column("n_params"), float)))
    assert [trained[r] for r in runs.index] == [2, 3, 4]  # trained at the planned sizes

    done = bayesmix(*run, "-n", 1, "--target-scale", "6@8000", "--size", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with Ledger.open(tmp_path / "exp.db") as led:
        last = led.runs().iloc[-1]
    assert (last["n_params"], last["steps"]) == (2, 200)  # --size reached each round's propose
    fid = fidelity(tmp_path / "exp.db")
    assert fid.target == {"n_params": 6.0, "tokens": 8000 * 256.0}  # read at the kept 256
    np.testing.assert_array_equal(fid.menu.n_params, [2, 3, 4])
    np.testing.assert_array_equal(fid.menu.steps, [200, 200, 400])


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--menu", "2@200,3@x"], "--menu '3@x': steps 'x' is not a positive whole number"),
        (["--target-scale", "5"], "--target-scale '5': not SIZE@STEPS"),
        (["--tokens-per-step", "0"], "--tokens-per-step 0.0 must be a positive number"),
        (["--strategy", "target-info"], "--strategy 'target-info' needs the ledger's proxy menu"),
        (
            ["--strategy", "target-info", "--menu", "2@200", "--target-scale", "5@4000"],
            "--strategy 'target-info' needs a law over model size and tokens: law 'm4' has",
        ),
        (
            ["--menu", "2@200", "--target-scale", "5@4000", "--slurm-partition", "gpu"],
            "--slurm-* options need --executor slurm",
        ),
        (["--size", "3"], "--size '3' needs the ledger's proxy menu"),
        (
            ["--menu", "2@200", "--target-scale", "5@4000", "--size", "3"],
            "--size '3' is not in the ledger's menu (entries: 2@200)",
        ),
    ],
)
def test_bad_run_menu_is_one_line_exit_2_and_changes_nothing(tmp_path, args, fragment):
    """Every option of run is checked before the menu is recorded or anything launched."""
    done = bayesmix("init", "--ledger", "exp.db", "--domains", "a,b", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    command = "echo {n_params} {steps} > {out}"
    done = bayesmix("run", "--ledger", "exp.db", "--command", command, *args, cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("bayesmix run: error: ") and fragment in lines[0], lines[0]
    assert fidelity(tmp_path / "exp.db") is None
    with Ledger.open(tmp_path / "exp.db") as led:
        assert led.runs().empty


def test_init_target_tokens_must_agree_with_the_target_scale(tmp_path):
    """--target-tokens (the token caps' budget) is the target run's tokens: given with
    --target-scale it must be its steps x tokens per step; then the caps use it."""
    init = ["init", "--ledger", "exp.db", "--domains", "a,b", "--menu", "2@200"]
    scale = ["--target-scale", "5@4000", "--tokens-per-step", 256]
    done = bayesmix(*init, *scale, "--target-tokens", "1e6", cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0] == (
        "bayesmix init: error: --target-tokens 1000000 disagrees with --target-scale 5@4000: "
        "4000 steps x 256 tokens per step = 1024000 tokens (make them agree, e.g. "
        "--target-tokens 1024000)"
    )
    assert not (tmp_path / "exp.db").exists()
    caps = ["--tokens-available", "a=102400", "--target-tokens", "1024000"]
    done = bayesmix(*init, *scale, *caps, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with Ledger.open(tmp_path / "exp.db") as led:
        assert led.fidelity().target["tokens"] == 1024000
        np.testing.assert_allclose(led.constraints.upper, [0.1, 1.0])  # 102400 / 1024000
