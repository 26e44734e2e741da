"""Critical share of continual pre-training on Ye et al.'s 70M runs (Pile + Python).

Data: ``../shared/data/mixinglaws/ct/70M.txt`` (5 runs continuing ``pythia_70m_step20000`` on
Pile shares 0.125-0.5, checkpoints every 1000 steps; step 0 = the starting checkpoint). The law
(``default`` unless told) is fitted to the step-10000 records; the original loss is the Pile
loss aggregated over its 22 validation domains with the Pile token shares
(``pipeline/valid_weight.json``); the start is its step-0 value (2.8734 nats per token).
Ye et al. report a critical general (Pile) share of about 0.29, i.e. Python about 0.71
(observed: Pile share 0.2852 gave 2.8721 against 2.8734 before).

``run()`` returns ``critical_share`` (median critical Python share), ``lo``/``hi`` (its 90%
interval), ``critical_general_share`` (median Pile share at the critical point), ``wall_s``
(fit, compilation included, + critical share), and ``general_lo``/``general_hi``,
``diagnostics_ok``, ``diagnostics_warning`` (None, or what failed), ``model``.

Run: ``.venv/bin/python benchmarks/continual.py`` (``--models default logshare powershare`` to
compare laws). The last line, for the first model::

    continual critical_share=.. [lo,hi] general_share=.. wall_s=..
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

from bayesmix.data.loaders import load
from bayesmix.decisions.continual import critical_share as compute_critical_share
from bayesmix.inference.fitting import fit

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mixinglaws"
STEP = 10000


def run(
    seed: int = 1,
    model: str = "default",
    data: Path = DEFAULT_DATA,
    prob: float = 0.9,
    mcmc: dict | None = None,
) -> dict:
    """Fit ``model`` at step 10000 and compute the critical share of Python (see module doc).
    ``mcmc``: draws, tune, chains to pass to ``fit`` (default: fit's own)."""
    runs = load(Path(data) / "ct" / "70M.txt")
    weights = Path(data) / "pipeline" / "valid_weight.json"
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = fit(runs, model, step=STEP, random_seed=seed, warn=False, **(mcmc or {}))
    cs = compute_critical_share(
        post, original="Pile", new="Python", runs=runs, weights=str(weights), prob=prob
    )
    wall = time.perf_counter() - start
    lo, hi = cs.interval
    glo, ghi = cs.original_interval
    return {
        "critical_share": cs.median,
        "lo": lo,
        "hi": hi,
        "critical_general_share": cs.original_median,
        "wall_s": wall,
        "general_lo": glo,
        "general_hi": ghi,
        "diagnostics_ok": post.diagnostics.ok,
        "diagnostics_warning": post.diagnostics_warning,
        "model": model,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, help="draws per chain (default: fit's)")
    ap.add_argument("--tune", type=int, help="tuning steps per chain (default: fit's)")
    ap.add_argument("--chains", type=int, help="chains (default: fit's)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--models",
        nargs="+",
        default=["default"],
        help="model specifications to fit (the last line reports the first)",
    )
    ap.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="the mixinglaws folder (default ../shared/data/mixinglaws)",
    )
    args = ap.parse_args()

    results = []
    print(
        f"{'model':<12} {'Python share [90%]':<26} {'Pile share [90%]':<26} {'gate':<7} wall_s",
        flush=True,
    )
    for model in args.models:
        mcmc = {k: v for k in ("draws", "tune", "chains") if (v := getattr(args, k)) is not None}
        r = run(args.seed, model, args.data, mcmc=mcmc)
        results.append(r)
        print(
            f"{model:<12} {r['critical_share']:.4f} [{r['lo']:.4f}, {r['hi']:.4f}]"
            f"{'':<5} {r['critical_general_share']:.4f} [{r['general_lo']:.4f}, "
            f"{r['general_hi']:.4f}]{'':<5} {'ok' if r['diagnostics_ok'] else 'FAILED':<7} "
            f"{r['wall_s']:.1f}",
            flush=True,
        )
        if r["diagnostics_warning"]:
            print(f"{'':<12} {r['diagnostics_warning']}", flush=True)
    print("Ye et al.: critical general share about 0.29 (Python about 0.71)")
    r = results[0]
    print(
        f"continual critical_share={r['critical_share']:.4f} [{r['lo']:.4f},{r['hi']:.4f}] "
        f"general_share={r['critical_general_share']:.4f} wall_s={r['wall_s']:.1f}"
    )


if __name__ == "__main__":
    main()
