"""An active-learning experiment in Python: the loop ``bayesmix propose/ingest/status/export``
runs, without the shell.

An :class:`Experiment` is a ledger file (:mod:`bayesmix.loop.ledger`) plus the fit settings used to
refit the mixing law. Each call opens the ledger, does one thing and closes it, so several
processes (or threads, each with its own Experiment) may work on one experiment::

    exp = Experiment.create("exp.db", ["web", "code", "books"], ["web", "code"],
                            constraints=Constraints.build(..., max_share={"code": 0.3}))
    exp.propose(8, out=True)          # round 0: a space-filling design, exp-round0.csv
    exp.ingest("results/round0.csv")  # or a RunTable / DataFrame
    exp.propose(8, strategy="thompson", out=True)   # fits, then round 1
    exp.recommend()                   # DecisionReport from the current posterior

The posterior. :meth:`Experiment.posterior` refits the model only when the completed results
(their digest), the model or the MCMC settings changed since the last fit; otherwise it reuses
the saved file (checked by its SHA-256). A fit is saved next to the ledger as
``<ledger>.posterior-round<N>.nc`` (N: the round it is for; ``-2``, ``-3``... when the name is
taken, never overwritten) and its record is stored in the ledger at once. A posterior that
failed its diagnostics gate is announced with a
:class:`bayesmix.posterior.diagnostics.ConvergenceWarning` each time it is used.

Proposals. :meth:`Experiment.propose` reads the pending and completed runs, chooses a batch and
records it in one transaction that allocates the round and re-checks the minimum distance
against every run recorded by then. When another proposer recorded runs too close to the batch
in the meantime, the batch is chosen again with those runs pending (no refit), up to
:data:`PROPOSE_ATTEMPTS` times. The hand-off file (CSV/JSON) is checked before any fit and
written after the runs are recorded; any round's file can be written again from the ledger
(:meth:`Experiment.export`), and a round whose file was never written is reported.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix._compat import PROGRESS, SEED, rename_kwargs, renamed_kwargs
from bayesmix.data.table import LOSS_PREFIX, MAX_LOSS, MIX_PREFIX, RunTable, check_known_domains
from bayesmix.decisions.inputs import resolve_weights
from bayesmix.loop.ledger import (
    IngestSummary,
    Ledger,
    ProposalConflictError,
    check_proposals_path,
    file_hash,
    write_proposals,
)
from bayesmix.posterior.diagnostics import ConvergenceWarning

#: How many times a batch is chosen again when a concurrent proposer recorded runs too close to
#: it while it was being chosen.
PROPOSE_ATTEMPTS = 3
#: Fit settings that must match for a saved posterior to be reused.
FIT_SETTINGS = ("model", "draws", "tune", "chains")


def best_trained_run(table: RunTable, *, weights=None, target: str | None = None) -> dict | None:
    """The recorded run with the lowest weighted loss (last checkpoint of each run), as
    ``{"run", "loss", "mixture"}`` (mixture: {train_domain: share}); runs missing a loss of a
    weighted domain are skipped; None when no run is left. Weights as :func:`bayesmix.decide`
    resolves them (equal when neither ``weights`` nor ``target`` is given)."""
    final = table.final()
    w, _ = resolve_weights(final.eval_domains, weights, target)
    losses = final.losses[list(final.eval_domains)].to_numpy(float)
    used = w > 0
    ok = ~np.isnan(losses[:, used]).any(axis=1)
    if not ok.any():
        return None
    score = np.where(ok, np.nan_to_num(losses) @ w, np.inf)
    i = int(np.argmin(score))
    mix = final.mixtures.iloc[i]
    return {
        "run": str(final.runs[i]),
        "loss": float(score[i]),
        "mixture": {str(d): float(v) for d, v in mix.items()},
    }


def results_digest(table: RunTable) -> str:
    """``sha256:<hex>`` of a run table's tidy CSV: changes whenever a result is added."""
    text = table.to_tidy().to_csv(index=False, float_format="%.17g")
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def shown_path(path: str | os.PathLike) -> str:
    """A path for messages: relative to the working directory when inside it, else absolute."""
    full = os.path.abspath(path)
    try:
        rel = os.path.relpath(full)
    except ValueError:
        return full
    return full if rel.startswith("..") else rel


class Experiment:
    """One experiment ledger and the settings its posteriors are fitted with.

    Open an existing ledger with ``Experiment(path)``, create one with :meth:`create`; then
    :meth:`propose`, :meth:`ingest`, :meth:`recommend`, :meth:`status` and :meth:`export` run
    the active-learning loop (the ``bayesmix propose/ingest/status/export`` commands).

    Parameters
    ----------
    ledger_path : str or path
        The experiment's SQLite ledger (a missing or foreign file is an error).
    model : str, default "default"
        Model specification name or TOML file fitted at each refit.
    draws, tune, chains : int
        MCMC settings of each refit.
    random_seed : int, default 0
        Default seed of fits and proposals (``seed`` is its deprecated name).
    progressbar : bool, default False
        Show the sampler's progress (``progress`` is its deprecated name).
    log : callable, optional
        Receives one line per step (e.g. ``print``); None for silence.

    Examples
    --------
    >>> import bayesmix as bm
    >>> exp = bm.Experiment.create("exp.db", ["web", "code"], initial_design=4)  # doctest: +SKIP
    >>> exp.last_proposals                                           # doctest: +SKIP
    >>> exp.ingest("results/round0.csv")                             # doctest: +SKIP
    >>> exp.propose(4, strategy="thompson", out=True)                # doctest: +SKIP
    >>> print(exp.recommend())                                       # doctest: +SKIP
    """

    @renamed_kwargs(**SEED, **PROGRESS)
    def __init__(
        self,
        ledger_path: str | os.PathLike,
        *,
        model: str = "default",
        draws: int = 1000,
        tune: int = 1000,
        chains: int = 4,
        random_seed: int = 0,
        progressbar: bool = False,
        log: Callable[[str], None] | None = None,
    ):
        from bayesmix.model.spec import load_spec

        for name, value in (("draws", draws), ("tune", tune), ("chains", chains)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise errors.OptionError(f"{name} must be an integer >= 1, got {value!r}")
        load_spec(model)  # an unknown model or law, bad priors: now, not after MCMC
        self.path = Path(ledger_path)
        self.model, self.draws, self.tune, self.chains = model, int(draws), int(tune), int(chains)
        self.random_seed, self.progressbar, self.log = random_seed, progressbar, log
        Ledger.open(self.path).close()  # a missing or foreign file fails here
        #: The frame returned by the last :meth:`propose` (or the design of :meth:`create`).
        self.last_proposals: pd.DataFrame | None = None
        #: What the last :meth:`ingest` (or the import of :meth:`create`) changed.
        self.last_ingest: IngestSummary | None = None
        self._cache: tuple[str, str, object] | None = None  # (path, hash, Posterior)

    def __repr__(self) -> str:
        return f"Experiment({str(self.path)!r}, model={self.model!r})"

    def _repr_html_(self) -> str:
        from bayesmix.display import card

        counts = self.status()["by_status"]
        facts = [
            ("ledger", str(self.path)),
            ("model", str(self.model)),
            ("runs", ", ".join(f"{n} {s}" for s, n in counts.items() if n)),
        ]
        return card("Experiment", facts, self.runs())

    # ------------------------------------------------------------------ create
    @classmethod
    def create(
        cls,
        ledger_path: str | os.PathLike,
        train_domains: Sequence[str] | None = None,
        eval_domains: Sequence[str] | None = None,
        constraints=None,
        *,
        runs: RunTable | None = None,
        target: Mapping[str, float] | None = None,
        settings: Mapping | None = None,
        initial_design: int | None = None,
        design_method: str = "sobol",
        design_alpha: float = 1.0,
        design_min_distance: float | None = None,
        out: str | os.PathLike | bool | None = None,
        **options,
    ) -> Experiment:
        """Create the ledger (never overwriting a file) and return its Experiment.

        Everything is checked before the file is created.

        Parameters
        ----------
        ledger_path : str or path
            The ledger to create.
        train_domains, eval_domains : sequence of str, optional
            Domain names (validation defaults to training); or give ``runs``.
        constraints : Constraints, optional
            Feasible mixtures over the training domains (default: the simplex).
        runs : RunTable, optional
            Past runs, imported as completed; they define the domains.
        target : mapping, optional
            Validation-domain weights of the objective (stored in the settings).
        settings : mapping, optional
            More settings to store.
        initial_design : int, optional
            Record this many space-filling mixtures as round 0 (``design_method`` sobol or
            dirichlet, ``design_alpha``, at least ``design_min_distance`` from ``runs``).
        out : str, path or bool, optional
            Also write the initial design for the training jobs (a path, or True for
            ``<ledger>-round0.csv``).
        **options
            Passed to :class:`Experiment` (model, draws, tune, chains, random_seed,
            progressbar, log).

        Returns
        -------
        Experiment
            The new experiment (``last_proposals``: the initial design, if any).

        Examples
        --------
        >>> exp = Experiment.create("exp.db", ["web", "code"], initial_design=4)  # doctest: +SKIP
        """
        from bayesmix.loop import design
        from bayesmix.model.spec import load_spec

        options = rename_kwargs("Experiment.create", options, {**SEED, **PROGRESS})

        path = Path(ledger_path)
        if path.exists():
            raise errors.LedgerError(
                "a file already exists here; refusing to overwrite it",
                source=str(path),
                hint="choose a new path, or open it with Experiment(path)",
            )
        load_spec(options.get("model", "default"))
        if runs is not None:
            if train_domains is not None or eval_domains is not None:
                raise errors.OptionError(
                    "give the domains or the runs, not both", hint="the runs define the domains"
                )
            train, evals = list(runs.train_domains), list(runs.eval_domains)
        else:
            if not train_domains:
                raise errors.DomainNameError("no training domains given", source=str(path))
            train = [str(d) for d in train_domains]
            evals = [str(d) for d in eval_domains] if eval_domains else list(train)
        settings = dict(settings or {})
        if target:
            weights = {str(k): float(v) for k, v in target.items()}
            check_known_domains(weights, evals, "validation")
            if any(w < 0 for w in weights.values()) or not sum(weights.values()) > 0:
                raise errors.OptionError("target weights must be >= 0 and not all 0")
            settings["target_weights"] = weights
        out_path = None
        if initial_design is None:
            if out:
                raise errors.OptionError(
                    "an output file needs an initial design",
                    hint="pass initial_design=N (--initial-design N)",
                )
        else:
            out_path = (
                path.with_name(f"{path.stem}-round0.csv")
                if out is True
                else Path(out)
                if out
                else None
            )
            if out_path is not None:
                check_proposals_path(out_path, inputs=[path])
        mixtures = None
        if initial_design is not None:
            from bayesmix.data.constraints import Constraints

            cons = constraints if constraints is not None else Constraints.unconstrained(train)
            existing = runs.mixtures[list(cons.domains)].to_numpy() if runs is not None else None
            mixtures = design.initial_design(
                cons,
                initial_design,
                random_seed=options.get("random_seed", 0),
                method=design_method,
                alpha=design_alpha,
                min_distance=design_min_distance,
                existing=existing,
            )
            mixtures = pd.DataFrame(mixtures, columns=list(cons.domains))
            settings["initial_design"] = {
                "n": initial_design,
                "seed": options.get("random_seed", 0),
                "method": design_method,
                "alpha": design_alpha,
                "min_distance": design_min_distance,
            }
        with Ledger.create(path, train, evals, constraints, settings) as led:
            summary = led.import_runs(runs) if runs is not None else None
            ids = None
            if mixtures is not None:
                ids = led.add_proposals(mixtures, f"initial-{design_method}", 0, handoff=out_path)
        exp = cls(path, **options)
        exp.last_ingest = summary
        if ids is not None:
            with exp._open() as led:
                frame = led.handoff_frame(0)
                frame = frame[frame["run"].isin(ids)].reset_index(drop=True)
                if out_path is not None:
                    write_proposals(frame, out_path)
                    led.mark_handoff_written(0)
            exp.last_proposals = _proposal_frame(
                frame,
                None,
                {
                    "round": 0,
                    "strategy": f"initial-{design_method}",
                    "path": out_path,
                    "posterior": None,
                    "notes": [],
                    "fit": None,
                },
            )
        return exp

    # ------------------------------------------------------------------ plumbing
    def _open(self) -> Ledger:
        return Ledger.open(self.path)

    def _say(self, msg: str) -> None:
        if self.log is not None:
            self.log(msg)

    def _settings(self) -> dict:
        return {"model": self.model, "draws": self.draws, "tune": self.tune, "chains": self.chains}

    def _default_handoff(self, round_no: int) -> Path:
        return self.path.with_name(f"{self.path.stem}-round{round_no}.csv")

    # ------------------------------------------------------------------ views
    def status(self) -> dict:
        """The ledger's summary (:meth:`bayesmix.loop.ledger.Ledger.summary`) plus
        ``missing_handoffs``: {round: file} of rounds whose hand-off file was never written."""
        with self._open() as led:
            summary = led.summary()
            summary["missing_handoffs"] = {str(r): p for r, p in led.missing_handoffs().items()}
        return summary

    def runs(self, status=None, *, losses: bool = True) -> pd.DataFrame:
        """Runs of the ledger (:meth:`bayesmix.loop.ledger.Ledger.runs`), with each completed run's
        losses at its last checkpoint (``loss.<domain>`` columns, empty for the others) unless
        ``losses=False``."""
        with self._open() as led:
            frame = led.runs(status)
            if not losses or not (frame["status"] == "completed").any():
                return frame
            final = led.run_table("completed").final().to_tidy()
        cols = [c for c in final.columns if c.startswith(LOSS_PREFIX)]
        return frame.merge(final[["run", *cols]], on="run", how="left")

    def set_status(self, run: str, status: str) -> None:
        """Mark a run running, failed, abandoned or proposed again."""
        self.set_statuses({run: status})

    def set_statuses(self, changes: Mapping[str, str]) -> list[str]:
        """Several status changes ({run: status}), all or nothing: each is checked before any
        is written (:meth:`bayesmix.loop.ledger.Ledger.set_statuses`). Returns the changed runs."""
        with self._open() as led:
            return led.set_statuses(changes)

    def proposals(self, round: int) -> pd.DataFrame:
        """Round ``round``'s proposals as handed off (run, round, strategy, [n_params, steps,
        tokens], mix.<domain>...), whatever the runs' status now."""
        with self._open() as led:
            return led.handoff_frame(round)

    def export(
        self, round: int, path: str | os.PathLike | None = None, *, force: bool = False
    ) -> Path:
        """Write round ``round``'s hand-off file again from the ledger (same format as
        :meth:`propose` writes; default ``<ledger>-round<N>.csv``); an existing file is
        replaced only with ``force``. Returns the path."""
        out = Path(path) if path is not None else self._default_handoff(int(round))
        check_proposals_path(out, overwrite=force, inputs=[self.path])
        with self._open() as led:
            frame = led.handoff_frame(round)
            write_proposals(frame, out)
            led.mark_handoff_written(int(round), out)
        return out

    # ------------------------------------------------------------------ results
    def ingest(
        self,
        results,
        *,
        format: str | None = None,
        renormalize: bool = False,
        import_unknown: bool = False,
        replace: bool = False,
        report: list[str] | None = None,
        max_loss: float = MAX_LOSS,
    ) -> IngestSummary:
        """Record results of proposed runs.

        Runs must be in the ledger with their proposed mixtures; the same results twice change
        nothing.

        Parameters
        ----------
        results : RunTable, DataFrame, path or list of paths
            A RunTable, a DataFrame in the tidy layout, or file/directory path(s) in any
            format ``bayesmix validate`` reads (``format``, ``renormalize`` as for
            :func:`bayesmix.load`).
        import_unknown : bool, default False
            Add runs the ledger does not know as external runs.
        replace : bool, default False
            Allow a different value for a stored loss (else refused).
        report : list, optional
            Receives the loaders' notes.
        max_loss : float
            Plausibility bound on losses (nats per token, :mod:`bayesmix.data.table`); a loss above
            it, not finite or not positive is refused and nothing is recorded.

        Returns
        -------
        IngestSummary
            What changed (runs completed, values added, unchanged).

        Examples
        --------
        >>> exp.ingest("results/round0.csv")  # doctest: +SKIP
        """
        from bayesmix.data.loaders import load

        with self._open() as led:
            if isinstance(results, RunTable):
                table = results
            elif isinstance(results, pd.DataFrame):
                table = RunTable.from_frame(
                    results,
                    source="results",
                    renormalize=renormalize,
                    report=report,
                    max_loss=max_loss,
                )
            else:
                table = load(
                    results,
                    format,
                    renormalize=renormalize,
                    report=report,
                    expected_domains={"train": led.train_domains, "eval": led.eval_domains},
                    max_loss=max_loss,
                )
            summary = led.record_results(
                table,
                unknown="import" if import_unknown else "error",
                on_conflict="replace" if replace else "error",
                max_loss=max_loss,
            )
        self.last_ingest = summary
        return summary

    # ------------------------------------------------------------------ posterior
    def posterior(self, *, refit: bool = False):
        """The posterior of the completed results: the saved one when nothing changed since
        the last fit (same results, model and MCMC settings, file unchanged), else a new fit
        saved next to the ledger. ConvergenceWarning when it failed its diagnostics."""
        with self._open() as led:
            post, _, _ = self._posterior(led, refit=refit, round_no=led.next_round())
        return post

    def _posterior(self, led: Ledger, *, refit: bool, round_no: int):
        """(posterior, path, record) for proposals of round ``round_no``; record is the fit
        record (posterior path relative to the ledger's folder) with ``reused`` set."""
        table = led.run_table()
        digest = results_digest(table)
        settings = self._settings()
        last = led.last_fit()
        if (
            last is not None
            and not refit
            and last.get("results_digest") == digest
            and all(last.get(k) == v for k, v in settings.items())
        ):
            path = led.resolve_path(last.get("posterior"), last.get("posterior_hash"))
            if path is not None:
                self._say(f"no new results since the last fit: reusing {shown_path(path)}")
                post = self._load(path, last["posterior_hash"])
                record = {**last, "posterior": led.relative_path(path), "reused": True}
                self._warn(post)
                return post, path, record
        from bayesmix.inference.fitting import fit

        self._say(
            f"fitting {self.model!r} to {table.n_runs} completed runs "
            f"({self.chains} chains x {self.draws} draws after {self.tune} tuning)"
        )
        post = fit(
            table,
            self.model,
            draws=self.draws,
            tune=self.tune,
            chains=self.chains,
            random_seed=self.random_seed,
            progressbar=self.progressbar,
            warn=False,
        )
        path = _save_new(post, led.folder, f"{Path(led.path).stem}.posterior-round{round_no}")
        self._say(f"posterior saved to {shown_path(path)}")
        record = {
            "posterior": led.relative_path(path),
            "posterior_hash": file_hash(path),
            "results_digest": digest,
            "n_runs": table.n_runs,
            "reused": False,
            "diagnostics_ok": post.diagnostics.ok,
            "diagnostics_warning": post.diagnostics_warning,
            **settings,
        }
        led.record_fit(record)
        self._cache = (str(path), record["posterior_hash"], post)
        self._warn(post)
        return post, path, record

    def _load(self, path: Path, digest: str):
        from bayesmix.posterior.posterior import Posterior

        if self._cache is not None and self._cache[:2] == (str(path), digest):
            return self._cache[2]
        post = Posterior.load(path)
        self._cache = (str(path), digest, post)
        return post

    @staticmethod
    def _warn(post) -> None:
        if post.diagnostics_warning:
            warnings.warn(post.diagnostics_warning, ConvergenceWarning, stacklevel=4)

    # ------------------------------------------------------------------ decide
    def recommend(self, *, weights=None, target: str | None = None, refit: bool = False, **options):
        """The mixture to train, from the current posterior (refitted only when results changed).

        Parameters
        ----------
        weights : mapping or path, optional
            Validation-domain weights (default: the ledger's target weights).
        target : str, optional
            One validation domain gets all the weight.
        refit : bool, default False
            Fit even when the results did not change.
        **options
            Passed to :func:`bayesmix.decide` (objective, baseline, ci_prob, random_seed, ...).
            Without ``baseline`` the baseline is the best run trained so far (lowest recorded
            loss under the same weights, last checkpoint of each run): the report's
            ``p_beats_baseline`` and comparison then say whether the recommendation is
            expected to beat a run you already have. With no usable recorded run: uniform.

        Returns
        -------
        DecisionReport
            :func:`bayesmix.decide` under the ledger's constraints.

        Examples
        --------
        >>> print(exp.recommend())  # doctest: +SKIP
        """
        from bayesmix.decisions.decision import decide

        with self._open() as led:
            post, path, _ = self._posterior(led, refit=refit, round_no=led.next_round())
            _check_domains(post, led, path)
            constraints = led.constraints
            if weights is None and target is None:
                weights = led.settings.get("target_weights") or None
            best = None
            if "baseline" not in options:
                best = best_trained_run(led.run_table(), weights=weights, target=target)
                if best is not None:
                    options["baseline"] = best["mixture"]
        report = decide(post, weights=weights, target=target, constraints=constraints, **options)
        if best is not None:
            report.baseline_label = (
                f"best trained run {best['run']} (recorded loss {best['loss']:.4f})"
            )
        return report

    # ------------------------------------------------------------------ propose
    @renamed_kwargs(**SEED)
    def propose(
        self,
        n: int = 8,
        strategy: str = "thompson",
        *,
        pool=None,
        out: str | os.PathLike | bool | None = None,
        force: bool = False,
        target: str | None = None,
        weights=None,
        min_distance: float | None = None,
        candidates: int | None = None,
        cost_power: float = 1.0,
        refit: bool = False,
        random_seed: int | None = None,
    ) -> pd.DataFrame:
        """Choose ``n`` runs, record them in the ledger and return them.

        With no completed run: an initial design (Sobol points, or random ``pool`` rows).
        Otherwise the current posterior (:meth:`posterior`) and ``strategy``.

        Parameters
        ----------
        n : int, default 8
            Runs to propose.
        strategy : {"thompson", "optimum-info", "bald", "random"}, default "thompson"
            Acquisition strategy (:mod:`bayesmix.loop.acquire`).
        pool : path, DataFrame or Candidates, optional
            Candidate runs to choose from; their costs (n_params x tokens) weigh in with
            ``cost_power``.
        out : str, path or bool, optional
            Also write the hand-off file (a .csv/.json path, or True for
            ``<ledger>-round<N>.csv``); checked before any fit, an existing file is replaced
            only with ``force``.
        target, weights : optional
            The objective: one validation domain, or weights (default: the ledger's target
            weights, else equal weights).
        min_distance : float, optional
            Least distance to pending and completed runs (default 0.05; 0.01 for initial
            designs).
        candidates : int, optional
            Size of the continuous candidate cloud.
        refit : bool, default False
            Fit even when the results did not change.
        random_seed : int, optional
            Seed of the proposal (default: the experiment's; ``seed`` is its deprecated name).

        Returns
        -------
        pandas.DataFrame
            run, round, strategy, [candidate], [information | draw_objective], [cost,
            n_params, steps, tokens], mix.<domain>...; ``frame.attrs`` holds round, strategy,
            path (hand-off file or None), posterior (path or None), notes and fit (the record
            stored with the round).

        Examples
        --------
        >>> exp.propose(8, strategy="thompson", out=True)  # doctest: +SKIP
        """
        from bayesmix.loop import acquire, design

        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise errors.OptionError(f"-n must be >= 1, got {n}")
        if min_distance is not None and not min_distance >= 0:
            raise errors.OptionError(f"--min-distance must be >= 0, got {min_distance}")
        if not cost_power >= 0:
            raise errors.OptionError(f"--cost-power must be >= 0, got {cost_power}")
        n_cand = acquire.DEFAULT_CANDIDATES if candidates is None else int(candidates)
        if n_cand < 1:
            raise errors.OptionError(f"--candidates must be >= 1, got {n_cand}")
        acquire.get_strategy(strategy)
        seed = self.random_seed if random_seed is None else random_seed
        pool_path = pool if isinstance(pool, (str, os.PathLike)) else None

        with self._open() as led:
            notes = [
                f"round {r}'s runs are recorded but their file {p} was never written "
                f"(interrupted?): recreate it with `bayesmix export --ledger {self.path} "
                f"--round {r}`"
                for r, p in led.missing_handoffs().items()
            ]
            led.check_writable()  # a read-only or locked ledger: now, not after a fit
            planned = led.next_round()
            explicit = None if out is None or isinstance(out, bool) else out
            if out is True or explicit is not None:
                first = Path(explicit) if explicit is not None else self._default_handoff(planned)
                check_proposals_path(first, overwrite=force, inputs=[self.path, pool_path])
            cands = None
            if pool is not None:
                cands = pool if isinstance(pool, acquire.Candidates) else _read_pool(pool, led)
                notes += list(cands.notes)
            post = post_path = record = belief = None
            if led.summary()["by_status"]["completed"]:
                post, post_path, record = self._posterior(led, refit=refit, round_no=planned)
                _check_domains(post, led, post_path)
                if target:
                    w, t = None, target
                elif weights is not None:
                    w, t = weights, None
                else:
                    w, t = led.settings.get("target_weights") or None, None
                belief = acquire.Belief.from_posterior(post, weights=w, target=t)
            dist = (
                min_distance
                if min_distance is not None
                else (
                    design.DEFAULT_MIN_DISTANCE if belief is None else acquire.DEFAULT_MIN_DISTANCE
                )
            )
            handoff: Path | Callable[[int], Path] | None = None
            if explicit is not None:
                handoff = Path(explicit)
            elif out is True:
                handoff = self._default_handoff

            for attempt in range(PROPOSE_ATTEMPTS):
                pending = led.pending().to_numpy(float)
                completed = led.runs("completed")
                done = completed[[MIX_PREFIX + d for d in led.train_domains]].to_numpy(float)
                if belief is None:
                    self._say("no completed runs yet: proposing an initial design")
                    batch = acquire.initial_batch(
                        led.constraints,
                        n,
                        pool=cands,
                        pending=pending,
                        existing=done,
                        min_distance=min_distance,
                        random_seed=seed,
                        cost_power=cost_power,
                    )
                    round_record = None
                else:
                    self._say(
                        f"choosing {n} runs by {strategy} ({belief.n_samples} draws; "
                        f"objective: {belief.weights_description}; {len(pending)} "
                        f"pending, {len(done)} completed)"
                    )
                    batch = acquire.propose(
                        belief,
                        n,
                        strategy=strategy,
                        constraints=led.constraints,
                        pool=cands,
                        pending=pending,
                        existing=done,
                        min_distance=min_distance,
                        n_candidates=n_cand,
                        random_seed=seed,
                        cost_power=cost_power,
                    )
                    round_record = {
                        **(record or {}),
                        "strategy": batch.strategy,
                        "seed": seed,
                        "objective": belief.weights_description,
                    }
                    if batch.ids is not None:
                        round_record["pool"] = str(pool_path) if pool_path else "candidates"
                        round_record["pool_rows"] = [str(i) for i in batch.ids]
                try:
                    ids = led.add_proposals(
                        batch.mixtures,
                        batch.strategy,
                        None,
                        posterior=post_path,
                        n_params=batch.planned("n_params"),
                        steps=batch.planned("steps"),
                        tokens=batch.planned("tokens"),
                        fit=round_record,
                        min_distance=dist,
                        handoff=handoff,
                    )
                    break
                except ProposalConflictError as err:
                    if attempt == PROPOSE_ATTEMPTS - 1:
                        raise
                    self._say(
                        f"{err.problem}: another proposer recorded runs meanwhile; "
                        "choosing again with them pending"
                    )
            notes += [note for note in batch.notes if note not in notes]
            if post is not None:
                check = post.mixture_range().check(batch.mixtures)
                if not check["inside"].all():
                    notes.append(
                        f"{int((~check['inside']).sum())} of {len(check)} proposals lie outside "
                        "the fitted runs' mixtures (exploration: their predictions rest on the "
                        "law's form)"
                    )
            runs = led.runs()
            mine = runs[runs["run"].isin(ids)].reset_index(drop=True)
            round_no = int(mine["round"].iloc[0])
            if round_no != planned:
                notes.append(
                    f"another proposer recorded round {planned} meanwhile: these runs "
                    f"are round {round_no}"
                )
            written = None
            if handoff is not None:
                written = handoff(round_no) if callable(handoff) else handoff
                try:
                    if explicit is None and round_no != planned and written.exists() and not force:
                        raise errors.OptionError("a file already exists here", source=str(written))
                    write_proposals(mine, written)
                except (OSError, errors.BayesmixError) as err:
                    raise errors.LedgerError(
                        f"runs {ids[0]} to {ids[-1]} are recorded as round {round_no} but "
                        f"their file {written} could not be written: {err}",
                        source=str(self.path),
                        hint=f"write it with `bayesmix export --ledger {self.path} --round "
                        f"{round_no} -o FILE.csv`",
                    ) from None
                led.mark_handoff_written(round_no)
        frame = _proposal_frame(
            mine,
            batch,
            {
                "round": round_no,
                "strategy": batch.strategy,
                "path": written,
                "posterior": post_path,
                "notes": notes,
                "fit": round_record,
            },
        )
        self.last_proposals = frame
        return frame

    # ---------------------------------------------------------------------------------- helpers
    # ------------------------------------------------------------------ run
    def run(
        self,
        command: str,
        *,
        rounds: int = 1,
        n: int = 8,
        strategy: str = "thompson",
        executor: str = "local",
        parallel: int = 1,
        ray_address: str | None = None,
        retries: int = 1,
        timeout: float | None = None,
        stale_after: float | None = None,
        workdir: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
        recommend: bool = True,
        cwd: str | os.PathLike | None = None,
        slurm: Mapping | None = None,
        on_round=None,
        **propose_options,
    ):
        """Run the loop: launch the proposed runs with ``command``, ingest, propose again.

        The Python side of ``bayesmix run`` (:mod:`bayesmix.loop.runner`): each round launches the
        ledger's proposed runs (or proposes ``n`` new ones first), at most ``parallel`` at a
        time, retries failures ``retries`` times, and records the results; Ctrl-C stops the
        jobs and leaves the ledger consistent (run again to resume).

        Parameters
        ----------
        command : str
            Shell command template with ``{run}``, ``{mixture_json}``, ``{mixture_file}`` and
            ``{out}`` (the result file the job writes: a run table ``ingest`` reads).
        rounds : int, default 1
            Rounds to run.
        n : int, default 8
            Runs per newly proposed batch.
        strategy : str, default "thompson"
            Acquisition strategy of new batches (:meth:`propose`).
        executor : {"local", "ray", "slurm"}, default "local"
            Where jobs run; ``"ray"`` needs the ``ray`` extra, ``"slurm"`` the ``slurm`` extra
            (submitit; its parameters in ``slurm``, e.g. ``{"slurm_partition": "gpu",
            "timeout_min": 600}``, ``"cluster": "local"`` to run them here).
        parallel : int, default 1
            Jobs at a time (local processes, or Ray CPUs of a local instance).
        ray_address : str, optional
            An existing Ray cluster (default: a local instance on 127.0.0.1).
        retries : int, default 1
            Extra launches of a failing run before it is marked failed.
        timeout : float, optional
            Seconds per launch (default: no limit).
        stale_after : float, optional
            Seconds without heartbeat after which a dead runner's running runs are taken
            back (default :data:`bayesmix.loop.runner.DEFAULT_STALE_AFTER_S`).
        workdir : path, optional
            The runs' folders (default ``<ledger stem>-runs`` next to the ledger).
        env : mapping, optional
            Extra environment variables of the jobs.
        recommend : bool, default True
            Fit and recommend at the end (:meth:`recommend`).
        cwd : path, optional
            Where commands start (default: the current directory).
        slurm : mapping, optional
            submitit parameters of ``executor="slurm"``.
        on_round : callable, optional
            Called with a :class:`bayesmix.loop.runner.RoundReport` after each round, e.g.
            :class:`bayesmix.loop.tracking.MLflowTracker`.
        **propose_options
            Passed to :meth:`propose` (``target``, ``weights``, ``min_distance``, ``pool``...).

        Returns
        -------
        bayesmix.loop.runner.RunSummary
            Rounds done, runs completed and failed, retries, ``interrupted``, and the
            ``recommendation`` (a DecisionReport, or None).

        Examples
        --------
        >>> summary = exp.run("python train.py --mixture-file {mixture_file} --out {out}",
        ...                   rounds=3, n=8, parallel=2)  # doctest: +SKIP
        >>> print(summary.describe())  # doctest: +SKIP
        """
        from bayesmix.loop.executors import get_executor
        from bayesmix.loop.runner import DEFAULT_STALE_AFTER_S, Runner

        runs_dir = (
            Path(workdir) if workdir is not None else self.path.with_name(f"{self.path.stem}-runs")
        )
        runner_exec = get_executor(
            executor, parallel, ray_address, slurm=slurm, folder=runs_dir / "slurm"
        )
        try:
            loop = Runner(
                self,
                command,
                runner_exec,
                workdir=workdir,
                retries=retries,
                batch=n,
                strategy=strategy,
                propose_options=propose_options,
                timeout_s=timeout,
                stale_after_s=DEFAULT_STALE_AFTER_S if stale_after is None else stale_after,
                env=env,
                log=self.log,
                cwd=cwd,
                on_round=on_round,
            )
        except BaseException:
            runner_exec.shutdown()
            raise
        return loop.run(rounds, recommend=recommend)


def _proposal_frame(runs: pd.DataFrame, batch, attrs: dict) -> pd.DataFrame:
    """run, round, strategy + the batch's own columns (score, cost, sizes, mix.*)."""
    if batch is None:
        extra = [c for c in ("n_params", "steps", "tokens") if runs[c].notna().any()]
        frame = runs[
            [
                "run",
                "round",
                "strategy",
                *extra,
                *[c for c in runs.columns if str(c).startswith(MIX_PREFIX)],
            ]
        ].copy()
    else:
        frame = batch.frame()
        frame.insert(0, "strategy", runs["strategy"].to_numpy())
        frame.insert(0, "round", runs["round"].to_numpy())
        frame.insert(0, "run", runs["run"].to_numpy())
    frame = frame.reset_index(drop=True)
    frame.attrs.update(attrs)
    return frame


def _check_domains(post, led: Ledger, path) -> None:
    if tuple(post.train_domains) != tuple(led.train_domains):
        raise errors.DomainNameError(
            "the posterior's training domains differ from the ledger's", source=str(path)
        )


def _read_pool(pool, led: Ledger):
    """Candidates from a pool file (CSV, JSON, Parquet) or DataFrame, checked against the
    ledger's domains and constraints."""
    from bayesmix.loop.acquire import Candidates

    if isinstance(pool, pd.DataFrame):
        frame, source = pool, "pool"
    else:
        p = Path(pool)
        source = str(p)
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
            raise errors.UnreadableFileError(
                f"cannot read the pool: {err}".splitlines()[0], source=str(p)
            ) from None
    if "tokens" not in frame.columns and "steps" not in frame.columns and "step" in frame:
        frame = frame.rename(columns={"step": "steps"})
    return Candidates.pool(frame, led.train_domains, constraints=led.constraints, source=source)


def _save_new(post, folder: Path, stem: str) -> Path:
    """Save ``post`` as ``<folder>/<stem>.nc`` (or ``<stem>-2.nc``, ``-3``... when taken):
    the name is reserved with an exclusive create, so two processes never write one file and
    no posterior another proposal refers to is overwritten; :meth:`Posterior.save` then
    replaces the empty file atomically (bayesmix.io's writer, mode 0666 & ~umask). A folder
    that cannot be written is a one-line WriteError."""
    k = 1
    while True:
        path = folder / (f"{stem}.nc" if k == 1 else f"{stem}-{k}.nc")
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            k += 1
            continue
        except OSError as err:
            raise errors.WriteError(
                f"cannot save the posterior ({err.strerror or err})",
                source=str(path),
                hint="the ledger's folder must be writable",
            ) from None
        os.close(fd)
        break
    try:
        post.save(path)
    except BaseException:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        raise
    return path
