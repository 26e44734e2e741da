"""Reusing runs of an earlier, coarser domain set: how many new runs it saves on RegMix.

The earlier swarm is pretended to have had a coarser training-domain set: three groups of
related Pile domains merged (``biomed`` = PubMed Central + PubMed Abstracts + NIH ExPorter,
``dialogue`` = Ubuntu IRC + EuroParl + Enron Emails + HackerNews, ``code_math`` = GitHub +
DM Mathematics: 17 -> 11 domains). Its runs are RegMix's training runs 257-512, shown to the fit
only through their coarse shares. They are remapped to the full set with a domain map
(:mod:`bayesmix.data.domain_maps`) whose splits divide each group's share among its parts in
proportion to their token shares (the Pile validation-domain weights of
``mixinglaws/pipeline/valid_weight.json`` when present, else the new runs' mean shares), and
fitted together with the first N new runs (full set); with ``--latent shared|per_run`` the fit
infers the old runs' split fractions (:mod:`bayesmix.data.latent_splits`, Dirichlet of total
``--concentration`` around the token fractions) instead of fixing them. The fresh fits see
only the first N new runs, for N in ``--fresh`` (default 16, 32, 64). All fits at ``bm.fit``'s
defaults (the law of ``--model``, default ``additive``). Score: the 256 RegMix test runs,
Spearman across runs per validation domain (mean over the 13 domains) and 90% predictive
coverage of all held-out losses.

``runs_saved`` = 1 - N / N_fresh, where N_fresh is the number of new runs a fresh fit needs to
reach the reuse fit's Spearman (linear interpolation in log N between the fresh fits; the largest
fresh N when none reaches it, a lower bound then). Last line::

    domain_change runs_saved=.. spearman_reuse=.. spearman_fresh=.. coverage90_reuse=..

(``spearman_fresh``: the fresh fit with the same N new runs.) Run:
``PYTHONPATH=. .venv/bin/python benchmarks/domain_change.py [--save out/dc.json]``; skips with a
message when ``../shared/data/regmix`` is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from bayesmix.data.domain_maps import DomainMap, concat_versions
from bayesmix.data.latent_splits import latent_splits
from bayesmix.data.loaders import load
from bayesmix.data.table import normalise_name
from bayesmix.inference.fitting import fit
from bayesmix.posterior.evaluation import evaluate

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GROUPS = {
    "biomed": ["pubmed_central", "pubmed_abstracts", "nih_exporter"],
    "dialogue": ["ubuntu_irc", "europarl", "enron_emails", "hackernews"],
    "code_math": ["github", "dm_mathematics"],
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def token_shares(data: Path, new_runs) -> tuple[dict[str, float], str]:
    """Size of every grouped domain (any unit) and where it came from."""
    weights = data / "mixinglaws" / "pipeline" / "valid_weight.json"
    if weights.is_file():
        raw = {normalise_name(k): v for k, v in json.loads(weights.read_text()).items()}
        found = {d: raw.get(normalise_name(d)) for g in GROUPS.values() for d in g}
        if all(v is not None for v in found.values()):
            return {d: float(v) for d, v in found.items()}, "Pile validation weights"
    mean = new_runs.mixtures.mean()
    return {d: float(mean[d]) + 1e-6 for g in GROUPS.values() for d in g}, "new runs' mean shares"


def maps(tokens: dict[str, float]) -> tuple[DomainMap, DomainMap]:
    """The full -> coarse map (the pretence) and the coarse -> full map (what a user writes)."""
    coarse = DomainMap.from_dict({"from": "full", "to": "coarse", "merge": GROUPS})
    back = DomainMap.from_dict(
        {
            "from": "coarse",
            "to": "full",
            "split": {
                g: {"into": ds, "tokens": [tokens[d] for d in ds]} for g, ds in GROUPS.items()
            },
        }
    )
    return coarse, back


def scores(post, test) -> dict:
    """Held-out scores through ``bm.evaluate``: mean per-domain Spearman, 90% coverage, MAE."""
    ev = evaluate(post, test, ci_prob=0.9, random_seed=0)
    summary = ev.summary()
    return {
        "spearman": float(ev.by_domain()["spearman"].mean()),
        "coverage90": summary["coverage"],
        "mae": summary["mae"],
        "gate": bool(post.diagnostics.ok),
    }


def fitted(
    runs, test, model: str, name: str, results: dict, save: Path | None, splits=None
) -> dict:
    if save and save.is_file():  # another process may have saved it meanwhile
        results.update({k: v for k, v in json.loads(save.read_text()).items() if k not in results})
    if name in results:
        log(f"{name}: saved")
        return results[name]
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = fit(runs, model, warn=False, random_seed=1, latent_splits=splits)
    out = scores(post, test) | {"fit_s": time.perf_counter() - start, "runs": runs.n_runs}
    if not out["gate"]:
        out["why"] = post.diagnostics_warning or ""
    results[name] = out
    return out


def runs_saved(n: int, target: float, fresh: dict[int, float]) -> float:
    """1 - n / (new runs a fresh fit needs to reach ``target``), interpolated in log N."""
    ns = sorted(fresh)
    if fresh[ns[0]] >= target:
        need = float(ns[0])
    else:
        need = float(ns[-1])
        for a, b in zip(ns, ns[1:], strict=False):
            if fresh[a] < target <= fresh[b]:
                x = (target - fresh[a]) / (fresh[b] - fresh[a])
                need = float(np.exp(np.log(a) + x * (np.log(b) - np.log(a))))
                break
    return max(0.0, 1.0 - n / need)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    ap.add_argument("--model", default="additive", help="the specification fitted")
    ap.add_argument("--new", type=int, default=16, help="new runs in the reuse fit")
    ap.add_argument("--fresh", default="16,32,64", help="new runs of the fresh fits")
    ap.add_argument("--old", type=int, default=256, help="earlier (coarse) runs reused")
    ap.add_argument("--save", type=Path, metavar="FILE.json", help="keep results; resume")
    ap.add_argument(
        "--latent",
        choices=("off", "shared", "per_run"),
        default="off",
        help="infer the split fractions of the old runs (one vector per group, or per run)",
    )
    ap.add_argument(
        "--concentration", type=float, default=20.0, help="Dirichlet total of the fractions"
    )
    args = ap.parse_args()
    folder = args.data / "regmix"
    if not folder.is_dir():
        print(f"RegMix data not found in {folder}: skipped")
        print(
            "domain_change runs_saved=nan spearman_reuse=nan spearman_fresh=nan "
            "coverage90_reuse=nan"
        )
        return
    train = load([folder / "train_mixture_1m.csv", folder / "train_pile_loss_1m.csv"])
    test = load([folder / "test_mixture_1m.csv", folder / "test_pile_loss_1m.csv"])
    fresh_ns = sorted({int(x) for x in args.fresh.split(",")} | {args.new})
    new_all = train.select(train.runs[: max(fresh_ns)])
    tokens, where = token_shares(args.data, new_all)
    coarse, back = maps(tokens)
    earlier = train.select(train.runs[-args.old :]).remap(coarse)  # what the old swarm recorded
    reused = earlier.remap(back)
    log(f"old runs: {earlier.n_runs} in {len(earlier.train_domains)} domains; split by {where}")
    results = {}
    if args.save and args.save.is_file():
        results = json.loads(args.save.read_text())

    def save():
        if args.save:
            if args.save.is_file():
                results.update(
                    {k: v for k, v in json.loads(args.save.read_text()).items() if k not in results}
                )
            tmp = args.save.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(results, indent=1))
            tmp.replace(args.save)

    fresh = {}
    for n in fresh_ns:
        m = fitted(train.select(train.runs[:n]), test, args.model, f"fresh{n}", results, args.save)
        save()
        fresh[n] = m["spearman"]
        print(f"fresh  N={n:<4} " + " ".join(f"{k}={v}" for k, v in m.items()), flush=True)
    both = concat_versions([train.select(train.runs[: args.new]), reused])
    splits, name = None, f"reuse{args.new}"
    if args.latent != "off":
        splits = latent_splits(
            back, earlier, concentration=args.concentration, per_run=args.latent == "per_run"
        )
        name += f"_{args.latent}{args.concentration:g}"
    m = fitted(both, test, args.model, name, results, args.save, splits)
    save()
    print(f"reuse  N={args.new:<4} " + " ".join(f"{k}={v}" for k, v in m.items()), flush=True)
    saved = runs_saved(args.new, m["spearman"], fresh)
    print(
        f"domain_change runs_saved={saved:.3f} spearman_reuse={m['spearman']:.4f} "
        f"spearman_fresh={fresh[args.new]:.4f} coverage90_reuse={m['coverage90']:.3f}"
    )


if __name__ == "__main__":
    main()
