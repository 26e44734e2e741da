"""Does every shipped law pass the diagnostics gate at the defaults a user gets?

Every fit here calls ``bm.fit`` (or the nested pipeline) with its default sampler settings and
time budget (``max_time``; ``BAYESMIX_MAX_TIME`` overrides it, as for any user), only the seed
changing (1-3). Fits, by data set (real data from ../shared/data, or --data; a data set whose
files are absent is skipped with a message):

==============  =====================================================================  ==========
data            what                                                                   laws
==============  =====================================================================  ==========
``regmix512``   RegMix 1M proxies, all 512 training runs (17 x 13 Pile domains)        m4, m4log,
                                                                                       powershare,
                                                                                       additive
``regmix64``    the first 64 of them                                                   same
``mix5``        Ye et al. 5Mix, 70M at step 30000 (26 runs, 5 x 22 domains)            same
``mix3``        Ye et al. 3Mix, 410M (32 runs, 3 x 3 domains)                          same
``olmix24``     Olmix DCLM swarm: 127 runs over 24 topics, 4 downstream evaluations    same
                (``OLMIX_EVALS``, bits per byte)
``mix5-total``  5Mix 70M at step 30000, the overall loss (domains weighted by the      implicit
                Pile's validation token shares)
``mix5-sizes``  5Mix 70M-410M, every checkpoint up to step 30000                       scaling
``swarm64``     simulated sparse swarm: 512 runs, 64 x 16 domains, 85% of shares zero  m4log
                (``scale_speed.swarm_runs``: the law with 64-domain priors)
``pipeline``    the nested pipeline on 5Mix 70M-410M up to step 30000, target 1B       all stages
                parameters at 100k steps (``nested_fit`` defaults, no backtest)
==============  =====================================================================  ==========

RegMix 512 with ``m4log`` (the ``logshare`` specification) runs at seeds 1-5. One line per fit:
law, data, seed, seconds (compilation included), gate passed, worst R-hat, min ESS (bulk or
tail), attempts (samplings made towards the gate; the pipeline's: over its stage fits). Ends
with::

    gate_defaults fits=.. passed=.. worst_rhat=.. min_ess=.. regmix512_s=..
    regmix512_seeds_passed=../5 swarm64_s=.. swarm64_gate=.. pipeline_s=.. pipeline_gates=..

``regmix512_s``, ``swarm64_s``, ``pipeline_s``: the slowest seed's seconds (nan when not run);
``swarm64_gate``: seeds passed / seeds; ``pipeline_gates``: stage fits passed / stage fits.
Goals (issue 27): passed == fits; regmix512_s <= 60 with 5/5; swarm64_s <= 300, passed;
pipeline gates passed in <= 240 s (2 cores; report the machine's load, printed first and last).

Run: ``.venv/bin/python benchmarks/gate_defaults.py`` (hours on 2 cores); ``--quick`` (seed 1
on mix3 and regmix64), ``--only regmix64,pipeline`` (data sets or laws; ``m4log@mix3`` one
pair), ``--seeds 1,2``, ``--save FILE.json`` (resume a long run), ``--quiet`` (no progress).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import bayesmix as bm

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
#: law -> shipped specification
SPECS = {
    "m4": "default",
    "m4log": "logshare",
    "powershare": "powershare",
    "additive": "additive",
    "implicit": "implicit",
    "scaling": "scaling",
}
MIXING_LAWS = ("m4", "m4log", "powershare", "additive")
#: Olmix evaluations fitted (the ones its data README names: knowledge, commonsense, code, text)
OLMIX_EVALS = (
    "arc_easy:rc::olmes",
    "hellaswag:rc::olmes",
    "codex_humaneval:3shot::none",
    "lambada",
)
SEEDS = (1, 2, 3)
REGMIX512_SEEDS = (1, 2, 3, 4, 5)
STEP = 30000.0  # 5Mix: the checkpoint every 70M run has; the proxies' last fitted step
PIPELINE_TARGET = {"target_n_params": 1e9, "target_steps": 100000.0}
PROXY_SIZES = ("70M", "160M", "305M", "410M")


# ------------------------------------------------------------------------------ data sets
class Absent(Exception):
    """A data set's files are not there (the message says which)."""


def _need(*paths: Path) -> None:
    for p in paths:
        if not p.exists():
            raise Absent(f"{p} not found (pass --data)")


def regmix(data: Path, n: int):
    folder = data / "regmix"
    files = [folder / "train_mixture_1m.csv", folder / "train_pile_loss_1m.csv"]
    _need(*files)
    table = bm.load(files)
    return table.select(table.runs[:n]), {}


def mix5(data: Path):
    path = data / "mixinglaws" / "5Mix" / "70M.txt"
    _need(path)
    return bm.load(path), {"step": STEP}


def mix5_total(data: Path):
    from bayesmix.scaling.aggregate import aggregate_losses  # not in the public API

    weights = data / "mixinglaws" / "pipeline" / "valid_weight.json"
    _need(weights)
    table = mix5(data)[0]
    return aggregate_losses(table.at_step(STEP), weights), {}


def mix5_sizes(data: Path):
    paths = [data / "mixinglaws" / "5Mix" / f"{s}.txt" for s in PROXY_SIZES]
    _need(*paths)
    return bm.load(paths), {"max_step": STEP}


def mix3(data: Path):
    path = data / "mixinglaws" / "3Mix" / "410M.txt"
    _need(path)
    return bm.load(path), {}


def olmix24(data: Path):
    ratios, metrics = data / "olmix" / "dclm_ratios.csv", data / "olmix" / "dclm_metrics.csv"
    _need(ratios, metrics)
    r = pd.read_csv(ratios, index_col=0)
    m = pd.read_csv(metrics, index_col=0).set_index("run").loc[r["run"]]
    topics = [c for c in r.columns if c not in ("run", "name", "index")]
    frame = pd.DataFrame({"run": r["run"].to_numpy()})
    for t in topics:
        frame[f"mix.{t}"] = r[t].to_numpy()
    for e in OLMIX_EVALS:
        frame[f"loss.{e}"] = m[e].to_numpy()
    return bm.RunTable.from_frame(frame, source=str(ratios.parent)), {}


def swarm64(data: Path):
    from scale_speed import swarm_runs

    runs, spec, truth_seed = swarm_runs(1)
    return runs, {"model": spec, "truth_seed": truth_seed}


def pipeline_data(data: Path):
    return mix5_sizes(data)


#: data set -> (loader(data folder) -> (runs, fit keywords), laws)
DATASETS: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "regmix512": (lambda d: regmix(d, 512), MIXING_LAWS),
    "regmix64": (lambda d: regmix(d, 64), MIXING_LAWS),
    "mix5": (mix5, MIXING_LAWS),
    "mix3": (mix3, MIXING_LAWS),
    "olmix24": (olmix24, MIXING_LAWS),
    "mix5-total": (mix5_total, ("implicit",)),
    "mix5-sizes": (mix5_sizes, ("scaling",)),
    "swarm64": (swarm64, ("m4log",)),
    "pipeline": (pipeline_data, ("pipeline",)),
}
QUICK = ("mix3", "regmix64")


# ------------------------------------------------------------------------------ fits
@dataclass
class Result:
    """One fit: what was fitted and how its gate came out."""

    law: str
    data: str
    seed: int
    seconds: float
    passed: bool
    rhat: float
    ess: float
    attempts: int
    note: str = ""
    stages: int = 1  # stage fits (the pipeline's 2 + J), else 1
    stages_passed: int = 0

    def line(self) -> str:
        return (
            f"{self.law:<10} {self.data:<10} seed={self.seed} s={self.seconds:.1f} "
            f"gate={'passed' if self.passed else 'FAILED'} rhat={self.rhat:.3f} "
            f"ess={self.ess:.0f} attempts={self.attempts}"
            + (f" stages={self.stages_passed}/{self.stages}" if self.law == "pipeline" else "")
            + (f"  ({self.note})" if self.note else "")
        )


def fit_law(runs, law: str, seed: int, kw: dict, progress: bool) -> Result:
    kw = dict(kw)
    model = kw.pop("model", SPECS[law])
    kw.pop("truth_seed", None)
    start = time.perf_counter()
    post = bm.fit(runs, model, random_seed=seed, warn=False, progressbar=progress, **kw)
    seconds = time.perf_counter() - start
    d = post.diagnostics
    return Result(
        law,
        "",
        seed,
        seconds,
        d.ok,
        float(d.max_rhat),
        float(min(d.min_ess_bulk, d.min_ess_tail)),
        len(post.settings.get("attempts", [])) or 1,
        "; ".join(d.failed),
        1,
        int(d.ok),
    )


def fit_pipeline(runs, seed: int, kw: dict, progress: bool) -> Result:
    from bayesmix.scaling.pipeline import nested_fit, pipeline_record  # not in the public API

    start = time.perf_counter()
    post = nested_fit(
        runs, **PIPELINE_TARGET, random_seed=seed, warn=False, progressbar=progress, **kw
    )
    seconds = time.perf_counter() - start
    rec = pipeline_record(post)
    assert rec is not None
    stages = [("stage 1", rec["stage1"])]
    stages += [(f"stage 2.{j + 1}", r) for j, r in enumerate(rec["stage2"])]
    stages.append(("stage 3", rec["stage3"]))
    diags = [r["diagnostics"] for _, r in stages]

    def num(x) -> float:
        return math.nan if x is None else float(x)

    rhat = max((num(d["max_rhat"]) for d in diags), key=lambda x: -math.inf if math.isnan(x) else x)
    ess = min(min(num(d["min_ess_bulk"]), num(d["min_ess_tail"])) for d in diags)
    failed = [name for (name, _), d in zip(stages, diags) if d["failed"]]
    return Result(
        "pipeline",
        "",
        seed,
        seconds,
        not failed,
        rhat,
        ess,
        sum(len(r["settings"].get("attempts", [])) or 1 for _, r in stages),
        ("failed: " + ", ".join(failed)) if failed else "",
        len(stages),
        len(stages) - len(failed),
    )


def plan(only: list[str] | None, quick: bool, seeds: tuple[int, ...] | None):
    """The (data set, law, seed) triples to fit, in order."""
    names = list(QUICK) if quick else list(DATASETS)
    if only:
        unknown = [o for o in only if not _matches_any(o)]
        if unknown:
            raise SystemExit(
                f"--only: unknown {', '.join(unknown)} (data sets: {', '.join(DATASETS)}; "
                f"laws: {', '.join(SPECS)}, pipeline; or LAW@DATA)"
            )
        names = list(DATASETS)
    out = []
    for name in names:
        for law in DATASETS[name][1]:
            if only and not any(o in (name, law, f"{law}@{name}") for o in only):
                continue
            run_seeds = (1,) if quick else SEEDS
            if name == "regmix512" and law == "m4log" and not quick:
                run_seeds = REGMIX512_SEEDS
            out += [(name, law, s) for s in (seeds or run_seeds)]
    return out


def _matches_any(token: str) -> bool:
    for name, (_, laws) in DATASETS.items():
        if token == name or token in laws or any(token == f"{law}@{name}" for law in laws):
            return True
    return False


# ------------------------------------------------------------------------------ summary
def summary_line(results: list[Result]) -> str:
    """The benchmark's last line (see the module docstring)."""

    def finite(values, pick):
        values = [v for v in values if np.isfinite(v)]
        return pick(values) if values else math.nan

    def slowest(rows):
        return f"{finite([r.seconds for r in rows], max):.1f}"

    r512 = [r for r in results if r.data == "regmix512" and r.law == "m4log"]
    swarm = [r for r in results if r.data == "swarm64"]
    pipe = [r for r in results if r.law == "pipeline"]
    return (
        f"gate_defaults fits={len(results)} passed={sum(r.passed for r in results)} "
        f"worst_rhat={finite([r.rhat for r in results], max):.3f} "
        f"min_ess={finite([r.ess for r in results], min):.0f} "
        f"regmix512_s={slowest(r512)} "
        f"regmix512_seeds_passed={sum(r.passed for r in r512)}/{len(r512)} "
        f"swarm64_s={slowest(swarm)} swarm64_gate={sum(r.passed for r in swarm)}/{len(swarm)} "
        f"pipeline_s={slowest(pipe)} "
        f"pipeline_gates={sum(r.stages_passed for r in pipe)}/{sum(r.stages for r in pipe)}"
    )


def machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores, load average {load} (1, 5, 15 min)"


def fit_all(todo, data: Path, saved: dict, save: Path | None, progress: bool, say) -> list[Result]:
    """Fit ``todo``'s (data set, law, seed) triples in order, printing one line per fit; data
    sets whose files are absent are skipped with a message; fits in ``saved`` are not redone
    and every new one is added to it (and written to ``save``)."""
    start = time.perf_counter()
    results: list[Result] = []
    loaded: dict[str, tuple | None] = {}
    for i, (name, law, seed) in enumerate(todo, 1):
        if name not in loaded:
            try:
                loaded[name] = DATASETS[name][0](data)
            except Absent as err:
                loaded[name] = None
                print(f"skipped {name}: {err}", flush=True)
        if loaded[name] is None:
            continue
        key = f"{law}|{name}|{seed}"
        if key in saved:
            res = Result(**saved[key])
            results.append(res)
            print(res.line() + " [saved]", flush=True)
            continue
        runs, kw = loaded[name]
        say(f"[{i}/{len(todo)}] {law} on {name}, seed {seed} ({time.perf_counter() - start:.0f} s)")
        try:
            if law == "pipeline":
                res = fit_pipeline(runs, seed, kw, progress)
            else:
                res = fit_law(runs, law, seed, kw, progress)
        except Exception as err:  # a fit that raises counts as failed; the line says why
            res = Result(law, name, seed, math.nan, False, math.nan, math.nan, 0, repr(err))
        res.data = name
        if kw.get("truth_seed") is not None:
            res.note = f"truth seed {kw['truth_seed']}" + (f"; {res.note}" if res.note else "")
        results.append(res)
        print(res.line(), flush=True)
        if save:
            saved[key] = asdict(res)
            tmp = save.with_suffix(".tmp")
            tmp.write_text(json.dumps(saved, indent=1))
            tmp.replace(save)
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    ap.add_argument("--quick", action="store_true", help=f"seed 1 on {' and '.join(QUICK)}")
    ap.add_argument(
        "--only", metavar="NAME[,NAME]", help="data sets, laws or LAW@DATA pairs to fit"
    )
    ap.add_argument("--seeds", metavar="S[,S]", help="seeds to fit (default 1-3; RegMix 512 1-5)")
    ap.add_argument("--save", type=Path, metavar="FILE.json", help="keep results; skip saved fits")
    ap.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = ap.parse_args(argv)
    only = [o.strip() for o in args.only.split(",") if o.strip()] if args.only else None
    seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
    todo = plan(only, args.quick, seeds)
    progress = not args.quiet

    def say(msg: str) -> None:
        if progress:
            print(msg, file=sys.stderr, flush=True)

    saved: dict[str, dict] = {}
    if args.save and args.save.is_file():
        saved = json.loads(args.save.read_text())
        say(f"{len(saved)} saved fits read from {args.save}")
    budget = os.environ.get("BAYESMIX_MAX_TIME", "default")
    print(f"machine: {machine()}; max_time {budget}", flush=True)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the gate is on each line
        results = fit_all(todo, args.data, saved, args.save, progress, say)
    print(f"wall_s={time.perf_counter() - start:.0f}; machine: {machine()}", flush=True)
    print(summary_line(results), flush=True)


if __name__ == "__main__":
    main()
