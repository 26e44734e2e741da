"""Active learning replayed on a pool of real runs: RegMix's 768 proxy runs (train + test).

Setting (issue 11, item 4). The pool is RegMix's 768 runs (17 training domains); the objective
is the Pile-CC validation loss. For every seed, ``--start`` (16) pool runs drawn at random are
shared by every strategy; each strategy then picks batches of ``--batch`` (8) runs from the rest
of the pool, sees their true (recorded) losses and refits, up to ``--budget`` (128) runs.

Strategies:

* the bayesmix strategies (:data:`bayesmix.loop.acquire.STRATEGIES`: thompson, optimum-info, bald)
  on the posterior of the law that ranks RegMix best, ``logshare`` (law m4log), fitted to the
  Pile-CC column only (a RunTable with just ``loss.pile_cc``), so one compiled model serves every
  refit. Fitted with the non-centred hierarchy (``--parameterization``): with one validation
  domain the centred one mixes badly at these draws (R-hat ~2, bulk ESS ~3 at 2 x 300 measured
  on 64 runs; non-centred: R-hat ~1.05, ESS 60-80, and 3-4x faster). Draws are kept modest,
  2 chains x 300 after 300 tuning, since 600 refits must fit in an afternoon;
* ``random``: random pool rows (RegMix's own design), with the same law fitted for the
  recommendation;
* ``gp-ei``: the Bayesian-optimisation baseline a user would otherwise pick - scikit-learn's
  GaussianProcessRegressor (constant x ARD Matern-5/2 + WhiteKernel, normalised y, hyperparameters
  by maximum likelihood with 2 restarts) on the raw shares, expected improvement over the untried
  pool runs, batches by greedy EI with the kriging believer (each pick is added with its
  posterior-mean value, hyperparameters kept, before the next). Not Ax/BoTorch: they pull in
  torch (several hundred MB, slow to install on the CPU-only machines this runs on) for the same
  GP-EI; scikit-learn is the ``bench`` extra (``pip install -e '.[bench]'``).

After every round (every fit) the benchmark records

* ``rec_regret``: regret of the recommendation, RELATIVE: its true loss / the pool's best
  loss - 1 (0.01 = 1 % worse). The recommendation (``--recommend measured``, the default) is the
  pool run with the lowest expected recorded Pile-CC loss: for an untrained run its predicted
  mean (posterior mean over all draws for bayesmix, the GP mean for gp-ei), for a trained run
  its recorded loss, which is observed and is exactly the quantity the regret scores. A user
  holding a trained run that beats every prediction keeps that run;
* ``model_rec_regret``: the same for the model-only recommendation (lowest predicted mean over
  all 768 runs, trained or not; ``--recommend model`` makes it the headline). Until
  2026-12-01 this was the benchmark's only rule: a model whose predictions are a little off
  near the optimum then never names the best run even after training it (measured at budget
  128, 6 seeds: Thompson trained the pool's best run in most seeds from 48 runs, yet its
  recommendation stayed 0.6 % off), so ``runs_to_0p1pct`` was 129 for every strategy;
* ``best_regret``: the same for the best run trained so far (true loss of the best run trained);
* ``mae``: mean absolute error of the predicted Pile-CC loss on the pool runs not yet used
  (posterior median per run for bayesmix: with few runs some logshare draws predict absurd
  losses, up to 1e100 nats, far from the data, which make the posterior mean useless as a
  point prediction there; the recommendation still minimises the posterior mean);
* ``bad_scores``: proposals of bald / optimum-info whose information score was not finite
  (inf or NaN from those draws; the pick is then arbitrary).

``runs_to_0p1pct``: the number of runs from which the recommendation is within 0.1 % of the
pool's best AND STAYS there at every later round up to the budget (budget + 1 if it is not
within 0.1 % at the last round). "Stays" because a user does not know when the model will
stop changing its mind; the summary also prints the first round at which it gets there. On
RegMix's pool only the best run itself is within 0.1 % (the second best is 0.3 % worse), so this
is "the recommendation is the pool's best run".

Last line (medians over seeds; regrets relative)::

    pool_replay rec_regret_at_32=NAME:MED,... best_regret_at_32=NAME:MED,...
        runs_to_0p1pct=NAME:MED,... wall_s=..

Measured (2026-12-01, 2 cores): 10 seeds x 5 strategies to 128 runs took about 77 minutes
in 2 processes (thompson,random,gp-ei and bald,optimum-info; seeds split across processes with
``--first-seed``/``--seeds`` and their CSVs concatenated), 5-15 s per logshare refit. Run (full,
10 seeds, budget 128; resumable)::

    .venv/bin/python benchmarks/pool_replay.py --csv pool_replay.csv

Quick: ``--seeds 2 --budget 48 --strategies thompson,random,gp-ei``. ``--csv FILE`` appends the
rounds of each (seed, strategy) when it is done and skips the pairs already there with the same
settings, so an interrupted run resumes where it stopped; ``--summarize FILE`` only summarises.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmix.data.loaders import load
from bayesmix.data.table import RunTable
from bayesmix.inference.fitting import fit
from bayesmix.loop import acquire
from bayesmix.loop.design import select_random
from bayesmix.model.spec import load_spec

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "regmix"
DOMAIN = "pile_cc"
GP = "gp-ei"
#: Budgets (runs) at which the regret curves are reported.
REPORT_AT = (24, 32, 48, 64, 96, 128)
TOL = 0.001
#: Settings that must match for rows of a CSV to be reused.
SETTINGS = (
    "model",
    "parameterization",
    "draws",
    "tune",
    "chains",
    "start",
    "batch",
    "min_distance",
)


def load_pool(folder: Path) -> RunTable:
    """The 768 RegMix runs with only the Pile-CC validation loss."""
    train = load([folder / "train_mixture_1m.csv", folder / "train_pile_loss_1m.csv"])
    test = load([folder / "test_mixture_1m.csv", folder / "test_pile_loss_1m.csv"])
    tidy = train.concat(test).to_tidy()
    cols = ["run", *[c for c in tidy.columns if c.startswith("mix.")], f"loss.{DOMAIN}"]
    return RunTable.from_frame(tidy[cols], source="regmix pool")


def model_spec(name: str, parameterization: str):
    """The specification ``name`` with the hierarchy's parameterisation set."""
    spec = load_spec(name)
    if spec.hierarchy.get("parameterization") == parameterization:
        return spec
    return dataclasses.replace(
        spec,
        name=f"{spec.name}-{parameterization}",
        hierarchy={**spec.hierarchy, "parameterization": parameterization},
    )


# ------------------------------------------------------------------------------- GP baseline
class GPEI:
    """GP Bayesian optimisation (minimisation) with scikit-learn: constant x ARD Matern-5/2 +
    white noise, normalised y, expected improvement, batches by the kriging believer."""

    def __init__(self, seed: int, restarts: int = 2):
        self.seed, self.restarts = seed, restarts
        self.gp = None

    def fit(self, x: np.ndarray, y: np.ndarray) -> GPEI:
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        m = x.shape[1]
        kernel = ConstantKernel(1.0, (1e-3, 1e3)) * Matern(
            np.full(m, 0.3), (1e-2, 1e2), nu=2.5
        ) + WhiteKernel(1e-2, (1e-6, 1.0))
        self.gp = GaussianProcessRegressor(
            kernel, normalize_y=True, n_restarts_optimizer=self.restarts, random_state=self.seed
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning at a length-scale bound
            self.gp.fit(x, y)
        return self

    def mean(self, x: np.ndarray) -> np.ndarray:
        return self.gp.predict(x)

    def propose(self, x: np.ndarray, y: np.ndarray, cands: np.ndarray, q: int) -> list[int]:
        """``q`` rows of ``cands`` by greedy EI with the kriging believer (the GP fitted to
        ``x, y`` is refitted with fantasies, hyperparameters fixed)."""
        from scipy.stats import norm
        from sklearn.gaussian_process import GaussianProcessRegressor

        gp, xs, ys, chosen = self.gp, x, y, []
        for _ in range(q):
            mu, sd = gp.predict(cands, return_std=True)
            sd = np.maximum(sd, 1e-12)
            gain = ys.min() - mu
            z = gain / sd
            ei = gain * norm.cdf(z) + sd * norm.pdf(z)
            ei[chosen] = -np.inf
            j = int(np.argmax(ei))
            chosen.append(j)
            xs, ys = np.vstack([xs, cands[j]]), np.r_[ys, mu[j]]
            gp = GaussianProcessRegressor(self.gp.kernel_, normalize_y=True, optimizer=None)
            gp.fit(xs, ys)
        return chosen


# ------------------------------------------------------------------------------------ replay
def fit_round(table: RunTable, spec, args, seed: int, rnd: int, first_fit: dict):
    """The posterior of one round: round 0 is the same for every bayesmix strategy of a seed
    (same runs, same seed), so it is fitted once and kept in ``first_fit``; the diagnostics
    banner is silenced (every row records divergences and R-hat instead)."""
    if rnd == 0 and seed in first_fit:
        return first_fit[seed]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = fit(
            table,
            spec,
            draws=args.draws,
            tune=args.tune,
            chains=args.chains,
            random_seed=seed * 1000 + rnd,
            warn=False,
        )
    if rnd == 0:
        first_fit[seed] = post
    return post


def recommend(mean: np.ndarray, y: np.ndarray, used: list[int]) -> int:
    """The pool run with the lowest expected recorded loss: the predicted mean for runs not
    trained, the recorded loss itself for runs trained (it is observed, so its posterior is that
    value). ``mean``, ``y``: (N,) over the pool; ``used``: indices of the trained runs."""
    score = np.array(mean, dtype=float)
    score[used] = y[used]
    return int(np.argmin(np.where(np.isfinite(score), score, np.inf)))


def replay(
    pool: RunTable, strategy: str, start: np.ndarray, args, seed: int, say, spec, first_fit: dict
) -> list[dict]:
    """One strategy, one seed: the rounds' figures. ``first_fit`` caches the seed's first
    posterior (same runs, same seed for every bayesmix strategy)."""
    x = pool.mixtures.to_numpy(float)
    y = pool.losses[DOMAIN].to_numpy(float)
    best = y.min()
    runs = np.asarray(pool.runs)
    used = list(start)
    rows, rnd = [], 0
    while True:
        t0 = time.perf_counter()
        post, model_s, diag = None, 0.0, {}
        if strategy == GP:
            gp = GPEI(seed * 1000 + rnd).fit(x[used], y[used])
            mean = middle = gp.mean(x)
        else:
            post = fit_round(pool.select(runs[used]), spec, args, seed, rnd, first_fit)
            with np.errstate(over="ignore", invalid="ignore"):
                pred = post.law.predict(x, post.law_params())[..., 0]  # (S, N)
            mean, middle = pred.mean(axis=0), np.median(pred, axis=0)
            diag = {
                "divergences": post.diagnostics.divergences,
                "max_rhat": post.diagnostics.max_rhat,
            }
        model_s = time.perf_counter() - t0
        rec_model = int(np.argmin(mean))
        rec = recommend(mean, y, used) if args.recommend == "measured" else rec_model
        regret = float(y[rec] / best - 1.0)
        rest = np.setdiff1d(np.arange(len(y)), used)
        mae = float(np.mean(np.abs(middle[rest] - y[rest])))
        seen = float(y[used].min() / best - 1.0)
        row = {
            "seed": seed,
            "strategy": strategy,
            "round": rnd,
            "n_runs": len(used),
            "rec_regret": regret,
            "model_rec_regret": float(y[rec_model] / best - 1.0),
            "best_regret": seen,
            "mae": mae,
            "model_s": model_s,
            "select_s": np.nan,
            "bad_scores": 0,
            "divergences": diag.get("divergences", np.nan),
            "max_rhat": diag.get("max_rhat", np.nan),
        }
        rows.append(row)
        if len(used) >= args.budget:
            say(_progress(row))
            return rows
        q = min(args.batch, args.budget - len(used))
        t1 = time.perf_counter()
        if strategy == GP:
            picked = rest[gp.propose(x[used], y[used], x[rest], q)]
        else:
            cands = acquire.Candidates(x[rest], pool.train_domains, ids=tuple(str(i) for i in rest))
            belief = acquire.Belief.from_posterior(post, target=DOMAIN)
            batch = acquire.get_strategy(strategy).propose(
                belief,
                cands,
                q,
                existing=x[used],
                min_distance=args.min_distance,
                random_seed=seed * 1000 + rnd,
            )
            picked = [int(i) for i in batch.ids]
            row["bad_scores"] = (
                int((~np.isfinite(batch.score)).sum())
                if strategy in ("bald", "optimum-info")
                else 0
            )
        row["select_s"] = time.perf_counter() - t1
        say(_progress(row))
        used += [int(i) for i in picked]
        rnd += 1


def _progress(row: dict) -> str:
    return (
        f"seed {row['seed']} {row['strategy']:>12} n={row['n_runs']:3d} "
        f"rec_regret={row['rec_regret']:7.3%} best_regret={row['best_regret']:7.3%} "
        f"mae={row['mae']:8.4f} model={row['model_s']:5.1f}s select={row['select_s']:4.1f}s "
        f"bad_scores={row['bad_scores']}"
    )


# ------------------------------------------------------------------------------- CSV, resume
def settings_of(args) -> dict:
    return {k: getattr(args, k) for k in SETTINGS}


def read_done(path: Path | None, settings: dict) -> pd.DataFrame:
    """Rows of ``path`` written with ``settings`` (empty when there is no such file)."""
    if path is None or not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    frame = pd.read_csv(path)
    missing = [k for k in (*settings, "budget") if k not in frame.columns]
    if missing:
        print(f"{path}: no column {missing[0]!r} (another format); its rows are ignored")
        return pd.DataFrame()
    keep = np.ones(len(frame), bool)
    for k, v in settings.items():
        col = frame[k]
        keep &= (
            np.isclose(col.astype(float), float(v))
            if isinstance(v, (int, float))
            else col.astype(str) == str(v)
        )
    if not keep.all():
        print(f"{path}: {int((~keep).sum())} rows written with other settings are ignored")
    return frame[keep]


def complete_pairs(frame: pd.DataFrame, budget: int) -> set:
    """(seed, strategy) pairs whose rounds reach ``budget`` runs."""
    if frame.empty:
        return set()
    top = frame.groupby(["seed", "strategy"])["n_runs"].max()
    return {k for k, v in top.items() if v >= budget}


def append_rows(path: Path, rows: list[dict], settings: dict, budget: int) -> None:
    frame = pd.DataFrame(rows).assign(**settings, budget=budget)
    frame.to_csv(path, mode="a", index=False, header=not path.is_file() or path.stat().st_size == 0)


def latest(frame: pd.DataFrame, seeds, strategies, budget: int) -> pd.DataFrame:
    """For each requested (seed, strategy), the rows of its last complete replay (a pair may
    have been replayed with several budgets), up to ``budget`` runs."""
    parts = []
    for (seed, strategy), g in frame.groupby(["seed", "strategy"]):
        if seed not in seeds or strategy not in strategies:
            continue
        g = (
            g[g["budget"] == g.loc[g["budget"] >= budget, "budget"].min()]
            if (g["budget"] >= budget).any()
            else g.iloc[0:0]
        )
        g = g.drop_duplicates("n_runs", keep="last")
        parts.append(g[g["n_runs"] <= budget])
    return pd.concat(parts) if parts else frame.iloc[0:0]


# ----------------------------------------------------------------------------------- summary
def runs_to_within(n_runs: np.ndarray, regret: np.ndarray, tol: float, cap: int) -> int:
    """Runs from which ``regret`` <= ``tol`` at every later round (cap + 1 if the last is
    above)."""
    ok = regret <= tol + 1e-12
    if not ok[-1]:
        return cap + 1
    bad = np.flatnonzero(~ok)
    return int(n_runs[0] if bad.size == 0 else n_runs[bad[-1] + 1])


def first_within(n_runs: np.ndarray, regret: np.ndarray, tol: float, cap: int) -> int:
    ok = np.flatnonzero(regret <= tol + 1e-12)
    return int(n_runs[ok[0]]) if ok.size else cap + 1


def _fmt(v: float) -> str:
    return f"{v:.4f}" if np.isfinite(v) else "nan"


def summarize(
    frame: pd.DataFrame, strategies: list[str], budget: int, wall: float, tag: str, regret_note: str
) -> None:
    """Median curves per strategy, per-seed runs to 0.1 %, and the last line."""
    strategies = [s for s in strategies if s in set(frame["strategy"])]
    seeds = sorted(frame["seed"].unique())
    at = [b for b in REPORT_AT if b <= budget]
    print(f"{len(seeds)} seeds ({', '.join(map(str, seeds))}); {regret_note}")
    cols = [("rec_regret", "recommendation's regret"), ("best_regret", "best-trained regret")]
    if "model_rec_regret" in frame.columns:
        cols.insert(1, ("model_rec_regret", "model-only recommendation's regret"))
    for col, title in cols:
        for stat in ("median", "mean"):
            table = (
                frame[frame["n_runs"].isin(at)]
                .groupby(["strategy", "n_runs"])[col]
                .agg(stat)
                .unstack("n_runs")
                .reindex(strategies)
            )
            print(f"{stat} {title} at budget (runs):")
            print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    mae = frame[frame["n_runs"].isin(at)].groupby(["strategy", "n_runs"])["mae"].median()
    print("median MAE of the predicted loss (runs not used) at budget:")
    print(mae.unstack("n_runs").reindex(strategies).to_string(float_format=lambda v: f"{v:.4f}"))
    stays, firsts = {}, {}
    for s in strategies:
        st, fi = [], []
        for _, g in frame[frame["strategy"] == s].groupby("seed"):
            g = g.sort_values("n_runs")
            n, r = g["n_runs"].to_numpy(), g["rec_regret"].to_numpy()
            st.append(runs_to_within(n, r, TOL, budget))
            fi.append(first_within(n, r, TOL, budget))
        stays[s], firsts[s] = np.asarray(st), np.asarray(fi)
        secs = frame.loc[frame["strategy"] == s, ["model_s", "select_s"]].sum().sum()
        print(
            f"{s:>12}: runs_to_0p1pct (stays) median {np.median(st):g} per seed {st}; "
            f"first within 0.1% median {np.median(fi):g} per seed {fi}; "
            f"model+select {secs:.0f} s"
        )
        if "model_rec_regret" in frame.columns:
            only = [
                runs_to_within(
                    g["n_runs"].to_numpy(), g["model_rec_regret"].to_numpy(), TOL, budget
                )
                for _, g in frame[frame["strategy"] == s].sort_values("n_runs").groupby("seed")
            ]
            print(f"{'':>12}  model-only recommendation: runs_to_0p1pct per seed {only}")

    def med(s, col, n):
        rows = (frame["strategy"] == s) & (frame["n_runs"] == n)
        return float(frame.loc[rows, col].median())

    n32 = 32 if budget >= 32 else at[-1] if at else budget
    rec = ",".join(f"{s}:{_fmt(med(s, 'rec_regret', n32))}" for s in strategies)
    seen = ",".join(f"{s}:{_fmt(med(s, 'best_regret', n32))}" for s in strategies)
    runs = ",".join(f"{s}:{np.median(stays[s]):g}" for s in strategies)
    print(
        f"{tag} rec_regret_at_{n32}={rec} best_regret_at_{n32}={seen} "
        f"runs_to_0p1pct={runs} wall_s={wall:.0f}"
    )


# ------------------------------------------------------------------------------------- main
def common_args(ap: argparse.ArgumentParser, model: str, parameterization: str) -> None:
    """Options shared with sim_replay.py."""
    ap.add_argument("--seeds", type=int, default=10, help="number of seeds (default 10)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument(
        "--strategies",
        default=",".join([*acquire.STRATEGIES, GP]),
        help=f"comma-separated, from {', '.join([*acquire.STRATEGIES, GP])} (default: all)",
    )
    ap.add_argument("--start", type=int, default=16, help="random runs to start from")
    ap.add_argument("--batch", type=int, default=8, help="runs per round")
    ap.add_argument("--budget", type=int, default=128, help="runs in all")
    ap.add_argument("--model", default=model, help=f"model specification (default {model})")
    ap.add_argument(
        "--parameterization", default=parameterization, choices=("centered", "noncentered")
    )
    # not fit's defaults: a replay refits ~600 times (seeds x strategies x rounds), and at
    # 4 x 1000 draws with retries towards the gate that takes days on 2 cores
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--tune", type=int, default=300)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--min-distance", type=float, default=acquire.DEFAULT_MIN_DISTANCE)
    ap.add_argument(
        "--csv",
        type=Path,
        help="append each (seed, strategy)'s rounds here; "
        "pairs already there (same settings) are skipped",
    )
    ap.add_argument(
        "--summarize",
        type=Path,
        metavar="CSV",
        help="only summarise a CSV written by --csv (no fitting)",
    )
    ap.add_argument("--quiet", action="store_true", help="no per-round progress")


def parse_strategies(text: str) -> list[str]:
    strategies = [s.strip() for s in text.split(",") if s.strip()]
    for s in strategies:
        if s != GP:
            acquire.get_strategy(s)
    return strategies


def summarize_file(args, settings, seeds, strategies, name: str, note: str) -> None:
    """``--summarize CSV``: the figures of an earlier (possibly unfinished) run, no fitting."""
    start = time.perf_counter()
    frame = latest(read_done(args.summarize, settings), seeds, strategies, args.budget)
    print(f"summary of {args.summarize} (wall_s below is the summary's, not the run's)")
    summarize(frame, strategies, args.budget, time.perf_counter() - start, name, note)


def resume(args, settings) -> tuple[list, set]:
    """Rows already in ``--csv`` with these settings, and the finished (seed, strategy) pairs."""
    done = read_done(args.csv, settings)
    finished = complete_pairs(done, args.budget)
    if finished:
        print(f"{args.csv}: {len(finished)} (seed, strategy) pairs already done, skipped")
    return ([] if done.empty else done.to_dict("records")), finished


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the RegMix CSVs")
    common_args(ap, "logshare", "noncentered")
    ap.add_argument(
        "--recommend",
        choices=("measured", "model"),
        default="measured",
        help="measured (default): the lowest of the trained runs' recorded losses and the "
        "untrained runs' predicted means; model: the lowest predicted mean over the whole pool",
    )
    args = ap.parse_args()
    strategies = parse_strategies(args.strategies)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    settings = {**settings_of(args), "recommend": args.recommend}
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    note = (
        "regrets relative: true loss / pool's best - 1 (Pile-CC); best-trained = the best "
        "run trained so far"
    )
    wall = time.perf_counter()
    if args.summarize:
        summarize_file(args, settings, seeds, strategies, "pool_replay", note)
        return
    if not (args.data / "train_mixture_1m.csv").is_file():
        raise SystemExit(f"RegMix data not found in {args.data} (pass --data)")
    pool = load_pool(args.data)
    y = pool.losses[DOMAIN].to_numpy(float)
    x = pool.mixtures.to_numpy(float)
    spec = model_spec(args.model, args.parameterization)
    print(
        f"pool: {pool.n_runs} runs, {len(pool.train_domains)} training domains; best "
        f"{DOMAIN} loss {y.min():.4f}, {int((y <= y.min() * (1 + TOL)).sum())} run(s) within "
        f"0.1% of it, {int((y <= y.min() * 1.01).sum())} within 1%; strategies "
        f"{', '.join(strategies)}; seeds {seeds[0]}..{seeds[-1]}; start {args.start}, batches "
        f"of {args.batch}, budget {args.budget}; model {spec.name} (law {spec.law}), MCMC "
        f"{args.chains} x {args.draws} after {args.tune}",
        flush=True,
    )
    rows, finished = resume(args, settings)
    first_fit: dict = {}
    for seed in seeds:
        start = select_random(x, args.start, random_seed=seed)
        for strategy in strategies:
            if (seed, strategy) in finished:
                continue
            new = replay(pool, strategy, start, args, seed, say, spec, first_fit)
            if args.csv:
                append_rows(args.csv, new, settings, args.budget)
            rows += [dict(r, **settings, budget=args.budget) for r in new]
        first_fit.clear()
    frame = latest(pd.DataFrame(rows), seeds, strategies, args.budget)
    summarize(frame, strategies, args.budget, time.perf_counter() - wall, "pool_replay", note)


if __name__ == "__main__":
    main()
