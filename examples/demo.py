"""bayesmix demo (temporary): simulate proxy runs, write them as a tidy CSV, validate and summarise.

Everything is written to a temporary directory that is removed at the end. Run with `make demo`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bayesmix.cli.validate import format_summary, summarize
from bayesmix.loaders import load
from bayesmix.simulate import simulate


def main() -> None:
    # 24 mixtures of 4 training domains, two proxy sizes, two checkpoints each, M4 law + noise
    table, truth = simulate(["web", "code", "books", "papers"], n_runs=24, seed=2024,
                            sizes=[7e7, 1.6e8], steps=[5000, 10000], noise_sd=0.02)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "runs.csv"
        table.to_tidy().to_csv(path, index=False)
        loaded = load(path)
        print(format_summary(summarize(loaded)).replace(str(path), "runs.csv (temporary)"))
    print("\ntrue law (M4): loss at the uniform mixture m, reducible share rho")
    for name, m, rho in zip(truth["eval_domains"], truth["m"], truth["rho"]):
        print(f"  {name:<8} m = {m:.3f}  rho = {rho:.3f}")


if __name__ == "__main__":
    main()
