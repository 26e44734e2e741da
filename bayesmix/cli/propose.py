"""``bayesmix propose``: propose the next batch of proxy runs for an experiment ledger.

With no completed runs it proposes a space-filling initial design (or random pool rows).
Otherwise it refits the model when results arrived since the last fit (the posterior is saved
next to the ledger as ``<ledger>.posterior-round<N>.nc``; an unchanged ledger reuses the last
one), chooses ``-n`` runs with the chosen strategy, accounting for runs still pending, records
them in the ledger (one transaction, with the posterior's path and hash) and writes them as CSV
or JSON for the training jobs. A posterior that failed its diagnostics is reported loudly and
recorded with the proposals.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from bayesmix import errors

_EPILOG = """strategies:
  thompson      posterior sampling: each run is the optimum of one posterior draw (default)
  optimum-info  runs that best tell apart where the optimum is (groups of per-draw optima)
  bald          runs that most reduce uncertainty about the law's parameters (early rounds)
  random        RegMix's design: Dirichlet mixtures / random pool rows (baseline)

examples:
  bayesmix propose --ledger exp.db -n 8
  bayesmix propose --ledger exp.db -n 8 --strategy optimum-info --out round2.json
  bayesmix propose --ledger exp.db -n 4 --pool candidates.csv --strategy bald
  bayesmix propose --ledger exp.db -n 8 --draws 500 --tune 500 --chains 2 --seed 3

A pool file lists candidate runs: mix.<domain> (or bare domain) columns, optional run,
n_params and steps/tokens (then information is divided by the cost n_params x tokens)."""


def register(subparsers) -> argparse.ArgumentParser:
    from bayesmix.acquire import DEFAULT_CANDIDATES, DEFAULT_MIN_DISTANCE, STRATEGIES

    p = subparsers.add_parser(
        "propose", help="propose the next proxy runs (active learning) and record them",
        description=__doc__.split("\n\n")[0].removeprefix("``bayesmix propose``: "),
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ledger", required=True, metavar="EXP.db", help="the experiment ledger")
    p.add_argument("-n", type=int, default=8, metavar="N", help="runs to propose (default 8)")
    p.add_argument("--strategy", default="thompson", metavar="|".join(STRATEGIES),
                   help="acquisition strategy (default thompson)")
    p.add_argument("--seed", type=int, default=0, help="seed of sampling and proposals")
    p.add_argument("--out", metavar="FILE.csv|FILE.json",
                   help="where to write the proposals (default: <ledger>-round<N>.csv)")
    p.add_argument("--pool", metavar="POOL.csv",
                   help="choose among these candidate runs instead of the whole feasible set")
    p.add_argument("--model", default="default", help="model name or TOML file (default)")
    p.add_argument("--draws", type=int, default=1000, help="MCMC draws per chain (default 1000)")
    p.add_argument("--tune", type=int, default=1000, help="MCMC tuning steps (default 1000)")
    p.add_argument("--chains", type=int, default=4, help="MCMC chains (default 4)")
    p.add_argument("--refit", action="store_true",
                   help="refit even when no result arrived since the last fit")
    obj = p.add_mutually_exclusive_group()
    obj.add_argument("--target", metavar="EVAL_DOMAIN",
                     help="optimise one validation domain (default: the ledger's target "
                          "weights, else equal weights)")
    obj.add_argument("--weights", metavar="FILE.json",
                     help="validation-domain weights {domain: weight}")
    p.add_argument("--min-distance", type=float, default=None, metavar="D",
                   help="smallest distance between a proposal and any other run (default "
                        f"{DEFAULT_MIN_DISTANCE})")
    p.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES, metavar="N",
                   help=f"size of the continuous candidate cloud (default {DEFAULT_CANDIDATES})")
    p.add_argument("--cost-power", type=float, default=1.0, metavar="P",
                   help="information / cost^P for pools with n_params/tokens (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)
    return p


def _say(args, msg: str) -> None:
    if not args.quiet:
        print(f"[propose] {msg}", file=sys.stderr, flush=True)


def _check_options(args) -> None:
    """Every option checked before any work: a bad value, an unknown strategy or an unknown or
    invalid model specification (law, priors) fails here with one line, not after MCMC."""
    from bayesmix.acquire import get_strategy
    from bayesmix.spec import load_spec

    if args.n < 1:
        raise errors.OptionError(f"-n must be >= 1, got {args.n}")
    for name in ("draws", "tune", "chains", "candidates"):
        if getattr(args, name) < 1:
            raise errors.OptionError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.min_distance is not None and not args.min_distance >= 0:
        raise errors.OptionError(f"--min-distance must be >= 0, got {args.min_distance}")
    if not args.cost_power >= 0:
        raise errors.OptionError(f"--cost-power must be >= 0, got {args.cost_power}")
    get_strategy(args.strategy)  # unknown names fail here, before any work
    load_spec(args.model)  # unknown model or law, bad priors: before any fit


def results_digest(table) -> str:
    """``sha256:<hex>`` of a run table's tidy CSV: changes whenever a result is added."""
    text = table.to_tidy().to_csv(index=False, float_format="%.17g")
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _read_pool(path: str, ledger):
    import pandas as pd

    from bayesmix.acquire import Candidates

    p = Path(path)
    try:
        if p.suffix.lower() == ".json":
            frame = pd.read_json(p)
        elif p.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(p)
        else:
            frame = pd.read_csv(p)
    except FileNotFoundError:
        raise errors.UnreadableFileError("file not found", source=str(p)) from None
    except (OSError, ValueError) as err:
        raise errors.UnreadableFileError(f"cannot read the pool: {err}".splitlines()[0],
                                         source=str(p)) from None
    if "tokens" not in frame.columns and "steps" not in frame.columns and "step" in frame:
        frame = frame.rename(columns={"step": "steps"})
    return Candidates.pool(frame, ledger.train_domains, constraints=ledger.constraints,
                           source=str(p))


def _posterior(args, ledger, table, round_no: int):
    """The posterior for this round: the last one if nothing changed, else a new fit.

    Returns (posterior, path, record) where record is what the ledger stores with the round.
    """
    from bayesmix.fit import fit
    from bayesmix.ledger import file_hash
    from bayesmix.posterior import Posterior

    digest = results_digest(table)
    settings = {"model": args.model, "draws": args.draws, "tune": args.tune,
                "chains": args.chains}
    records = ledger.fit_records()
    if records and not args.refit:
        last = records[max(records)]
        path = Path(last.get("posterior", ""))
        same = last.get("results_digest") == digest and all(
            last.get(k) == v for k, v in settings.items())
        if same and path.is_file() and file_hash(path) == last.get("posterior_hash"):
            _say(args, f"no new results since round {max(records)}: reusing {path}")
            post = Posterior.load(path)
            return post, path, {**last, "reused": True}
    path = Path(ledger.path).with_name(f"{Path(ledger.path).stem}.posterior-round{round_no}.nc")
    _say(args, f"fitting {args.model!r} to {table.n_runs} completed runs "
               f"({args.chains} chains x {args.draws} draws after {args.tune} tuning)")
    post = fit(table, args.model, draws=args.draws, tune=args.tune, chains=args.chains,
               seed=args.seed, progress=not args.quiet, warn=False)
    post.save(path)
    _say(args, f"posterior saved to {path}")
    record = {"posterior": str(path), "posterior_hash": file_hash(path),
              "results_digest": digest, "n_runs": table.n_runs, "reused": False,
              "diagnostics_ok": post.diagnostics.ok,
              "diagnostics_warning": post.diagnostics_warning, **settings}
    return post, path, record


def _loud(warning: str) -> None:
    bar = "!" * 78
    print(f"{bar}\nWARNING: {warning}\nThe proposals below come from a posterior that failed "
          f"its diagnostics; they may be poorly chosen. Refit with more draws/tuning (or a "
          f"better model) before relying on them.\n{bar}", file=sys.stderr, flush=True)


def run(args) -> int:
    from bayesmix import acquire
    from bayesmix.ledger import Ledger, check_proposals_path, write_proposals

    _check_options(args)
    with Ledger.open(args.ledger) as ledger:
        all_runs = ledger.runs()
        round_no = ledger.current_round() + 1 if len(all_runs) else 0
        ledger_path = Path(args.ledger)
        out = Path(args.out) if args.out else ledger_path.with_name(
            f"{ledger_path.stem}-round{round_no}.csv")
        check_proposals_path(out)
        pool = _read_pool(args.pool, ledger) if args.pool else None
        for note in () if pool is None else pool.notes:
            print(f"note: {note}")
        pending = ledger.pending().to_numpy(float)
        completed = ledger.runs("completed")
        done = completed[[f"mix.{d}" for d in ledger.train_domains]].to_numpy(float)
        constraints = ledger.constraints

        post_path, record, strategy = None, None, args.strategy
        if len(completed) == 0:
            _say(args, "no completed runs yet: proposing an initial design")
            batch = acquire.initial_batch(constraints, args.n, pool=pool, pending=pending,
                                          min_distance=args.min_distance, seed=args.seed)
            strategy = batch.strategy
        else:
            table = ledger.run_table()
            post, post_path, record = _posterior(args, ledger, table, round_no)
            if post.diagnostics_warning:
                _loud(post.diagnostics_warning)
            if tuple(post.train_domains) != tuple(ledger.train_domains):
                raise errors.DomainNameError("the posterior's training domains differ from "
                                             "the ledger's", source=str(post_path))
            if args.target:
                weights, target = None, args.target
            elif args.weights:
                weights, target = args.weights, None
            else:
                target, weights = None, ledger.settings.get("target_weights") or None
            belief = acquire.Belief.from_posterior(post, weights=weights, target=target)
            _say(args, f"choosing {args.n} runs by {args.strategy} ({belief.n_samples} draws; "
                       f"objective: {belief.weights_description}; {len(pending)} pending, "
                       f"{len(done)} completed)")
            batch = acquire.propose(belief, args.n, strategy=args.strategy,
                                    constraints=constraints, pool=pool, pending=pending,
                                    existing=done, min_distance=args.min_distance,
                                    n_candidates=args.candidates, seed=args.seed,
                                    **({"cost_power": args.cost_power}
                                       if args.strategy in ("bald", "optimum-info") else {}))
            strategy = batch.strategy
            record = {**record, "strategy": strategy, "seed": args.seed,
                      "objective": belief.weights_description}
            if batch.ids is not None:
                record["pool"] = str(args.pool)
        for note in batch.notes:
            if pool is None or note not in pool.notes:
                print(f"note: {note}")
        if record is not None and batch.ids is not None:
            record["pool_rows"] = [str(i) for i in batch.ids]
        ids = ledger.add_proposals(batch.mixtures, strategy, round_no, posterior=post_path,
                                   n_params=batch.planned("n_params"),
                                   steps=batch.planned("steps"), tokens=batch.planned("tokens"),
                                   fit=record)
        frame = ledger.runs("proposed")
        frame = frame[frame["run"].isin(ids)]
        write_proposals(frame, out)

    shown = batch.frame()
    shown.insert(0, "run", ids)
    shown.columns = [str(c).removeprefix("mix.") for c in shown.columns]
    print(f"round {round_no}: proposed {len(ids)} runs by {strategy} ({ids[0]} to {ids[-1]}), "
          f"written to {out}")
    if post_path is not None:
        print(f"posterior: {post_path}" + (" (FAILED diagnostics)"
                                           if record and record.get("diagnostics_warning")
                                           else ""))
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0
