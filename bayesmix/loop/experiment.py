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

The steps live in their own modules: creating a ledger (:mod:`bayesmix.loop.creation`), the
posterior refitted only when the completed results, the model or the MCMC settings changed
(:mod:`bayesmix.loop.refit`), and a proposal from request to hand-off file
(:mod:`bayesmix.loop.proposing`); the closed loop of :meth:`Experiment.run` is
:mod:`bayesmix.loop.runner`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix._compat import PROGRESS, SEED, rename_kwargs, renamed_kwargs
from bayesmix.data.table import LOSS_PREFIX, MAX_LOSS, RunTable
from bayesmix.laws import get_law
from bayesmix.loop import creation
from bayesmix.loop.candidates import DEFAULT_CANDIDATES
from bayesmix.loop.ledger import (
    Fidelity,
    IngestSummary,
    Ledger,
    check_proposals_path,
    resolve_fidelity,
    write_proposals,
)
from bayesmix.loop.ledger_domains import DomainChange
from bayesmix.loop.proposing import Proposer, ProposeRequest
from bayesmix.loop.recommending import Recommendation
from bayesmix.loop.refit import FitSettings, PosteriorStore, check_domains
from bayesmix.model.spec import load_spec


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
                raise errors.OptionError(f"{name}={value!r} must be an integer >= 1", param=name)
        load_spec(model)  # an unknown model or law, bad priors: now, not after MCMC
        self.path = Path(ledger_path)
        self.model, self.draws, self.tune, self.chains = model, int(draws), int(tune), int(chains)
        self.random_seed, self.progressbar, self.log = random_seed, progressbar, log
        Ledger.open(self.path).close()  # a missing or foreign file fails here
        #: The frame returned by the last :meth:`propose` (or the design of :meth:`create`).
        self.last_proposals: pd.DataFrame | None = None
        #: What the last :meth:`ingest` (or the import of :meth:`create`) changed.
        self.last_ingest: IngestSummary | None = None
        self._posteriors = PosteriorStore(self._say)

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
        menu=None,
        target_scale=None,
        tokens_per_step: float | None = None,
        **options,
    ) -> Experiment:
        """Create the ledger (never overwriting a file) and return its Experiment.

        Everything is checked before the file is created.

        Parameters
        ----------
        ledger_path, train_domains, eval_domains : path, sequences of str
            The ledger to create; domain names (validation defaults to training) or ``runs``.
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
        menu, target_scale, tokens_per_step : optional
            The proxy menu and the target run's scale of a multi-fidelity loop, as in
            :meth:`set_menu` (both or neither); round 0 then spreads over the menu's sizes.
        **options
            Passed to :class:`Experiment` (model, draws, tune, chains, random_seed,
            progressbar, log).

        Returns
        -------
        Experiment
            The new experiment (``last_proposals``: the initial design, if any).
        """
        options = rename_kwargs("Experiment.create", options, {**SEED, **PROGRESS})
        plan = creation.plan(
            Path(ledger_path),
            train_domains,
            eval_domains,
            constraints,
            runs=runs,
            target=target,
            settings=settings,
            initial_design=initial_design,
            design={"method": design_method, "alpha": design_alpha},
            design_min_distance=design_min_distance,
            out=out,
            fidelity=(menu, target_scale, tokens_per_step),
            options=options,
        )
        summary, ids = creation.write_ledger(plan, constraints, runs)
        path, round0 = plan.path, plan.round0
        exp = cls(path, **options)
        exp.last_ingest = summary
        if round0 is not None and ids is not None:
            exp.last_proposals = creation.hand_off_round0(path, ids, round0)
        return exp

    # ------------------------------------------------------------------ plumbing
    def _open(self) -> Ledger:
        return Ledger.open(self.path)

    def _say(self, msg: str) -> None:
        if self.log is not None:
            self.log(msg)

    def _fit_settings(self) -> FitSettings:
        return FitSettings(
            self.model, self.draws, self.tune, self.chains, self.random_seed, self.progressbar
        )

    def _default_handoff(self, round_no: int) -> Path:
        return self.path.with_name(f"{self.path.stem}-round{round_no}.csv")

    # ------------------------------------------------------------------ views
    def status(self) -> dict:
        """The ledger's summary (:meth:`bayesmix.loop.ledger.Ledger.summary`) plus
        ``missing_handoffs``: {round: file} of rounds whose hand-off file was never written."""
        with self._open() as led:
            summary = led.summary()
            summary["missing_handoffs"] = {str(r): p for r, p in led.missing_handoffs().items()}
            fid = led.fidelity()
        summary["fidelity"] = None if fid is None else fid.record()
        return summary

    def set_menu(self, menu=None, target_scale=None, *, tokens_per_step=None) -> Fidelity:
        """Record the proxy menu and the target run's scale (``target-info`` and the initial
        design's sizes read them): ``menu`` a :class:`~bayesmix.loop.fidelity.Menu` or text
        ``"70M@10000,160M@10000,410M@20000"`` (``SIZE@STEPS[=COST]``, default cost n_params x
        tokens), ``target_scale`` ``{"n_params": N, "tokens": D}`` or ``"1B@100000"``; either
        kept from the ledger when None; text read at ``tokens_per_step`` (default the ledger
        menu's, else ``TOKENS_PER_STEP``). Everything is checked before it is written."""
        with self._open() as led:
            fid = resolve_fidelity(led.fidelity(), menu, target_scale, tokens_per_step)
            led.set_menu(fid.menu, fid.target)
        return fid

    def runs(self, status=None, *, losses: bool = True) -> pd.DataFrame:
        """Runs of the ledger (:meth:`bayesmix.loop.ledger.Ledger.runs`), with each completed run's
        losses at its last checkpoint (``loss.<domain>`` columns, empty for the others) unless
        ``losses=False``."""
        with self._open() as led:
            frame = led.runs(status)
            fitted = frame.filter(like="mix.").notna().all(axis=1)  # a map may leave runs out
            if not losses or not (fitted & (frame["status"] == "completed")).any():
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

    def change_domains(
        self, domain_map, *, name=None, constraints=None, pending: str = "abandon"
    ) -> DomainChange:
        """Change the experiment's training-domain set (``bayesmix change-domains``): a new
        version made by ``domain_map`` (DomainMap, TOML path or dict) is recorded; proposed runs
        of the old set are ``pending="abandon"``-ed or ``"remap"``-ped; later fits, proposals
        and recommendations use every completed run, older ones remapped through the stored
        maps. Arguments as :meth:`bayesmix.loop.ledger.Ledger.change_domains`."""
        with self._open() as led:
            change = led.change_domains(
                domain_map, name=name, constraints=constraints, pending=pending
            )
        for line in change.describe().splitlines():
            self._say(line)
        return change

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
        saved next to the ledger as ``<ledger>.posterior-round<N>.nc``
        (:mod:`bayesmix.loop.refit`). ConvergenceWarning when it failed its diagnostics."""
        with self._open() as led:
            post, _, _ = self._posterior(led, refit=refit, round_no=led.next_round())
        return post

    def _posterior(self, led: Ledger, *, refit: bool, round_no: int):
        """(posterior, path, fit record) for proposals of round ``round_no``."""
        return self._posteriors.current(led, self._fit_settings(), refit=refit, round_no=round_no)

    # ------------------------------------------------------------------ decide
    def recommend(self, *, weights=None, target: str | None = None, refit: bool = False, **options):
        """The mixture to train, from the current posterior (refitted only when results changed).

        Parameters
        ----------
        weights, target, refit : optional
            Validation-domain weights (default: the ledger's target weights), or one validation
            domain with all the weight; fit even when the results did not change.
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
        """
        with self._open() as led:
            post, path, _ = self._posterior(led, refit=refit, round_no=led.next_round())
            check_domains(post, led, path)
            recommendation = Recommendation.from_ledger(led, weights, target, options)
        return recommendation.decide(post)

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
        menu=None,
        target_scale=None,
        tokens_per_step: float | None = None,
        size: str | None = None,
    ) -> pd.DataFrame:
        """Choose ``n`` runs, record them in the ledger and return them.

        With no completed run: an initial design (Sobol points, or random ``pool`` rows).
        Otherwise the current posterior (:meth:`posterior`) and ``strategy``.

        Parameters
        ----------
        n, strategy : optional
            Runs to propose (default 8); acquisition strategy: thompson (default),
            optimum-info, bald, random, target-info (:mod:`bayesmix.loop.acquire`).
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
        candidates, refit, random_seed : optional
            Size of the continuous candidate cloud; fit even when the results did not change;
            seed of the proposal (default: the experiment's; ``seed`` is its deprecated name).
        menu, target_scale, tokens_per_step : optional
            As in :meth:`set_menu`: recorded after every check and before any fit.
        size : str, optional
            Only the menu's entries of this size ("160M"; "160M@10000": one entry).

        Returns
        -------
        pandas.DataFrame
            run, round, strategy, [candidate], [information | draw_objective], [cost,
            n_params, steps, tokens], mix.<domain>...; ``frame.attrs`` holds round, strategy,
            path (hand-off file or None), posterior (path or None), notes and fit (the record
            stored with the round).

        """
        request = ProposeRequest(
            n,
            strategy,
            pool=pool,
            out=out,
            force=force,
            target=target,
            weights=weights,
            min_distance=min_distance,
            n_candidates=DEFAULT_CANDIDATES if candidates is None else int(candidates),
            cost_power=cost_power,
            refit=refit,
            random_seed=self.random_seed if random_seed is None else random_seed,
            menu=None
            if menu is None and target_scale is None and tokens_per_step is None
            else {"menu": menu, "target_scale": target_scale, "tokens_per_step": tokens_per_step},
            size=size,
        )
        proposer = Proposer(
            self.path,
            posterior=lambda led, refit, round_no: self._posterior(
                led, refit=refit, round_no=round_no
            ),
            say=self._say,
            default_handoff=self._default_handoff,
            law=get_law(load_spec(self.model).law),
        )
        self.last_proposals = proposer.run(request)
        return self.last_proposals

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
        rounds, n, strategy : optional
            Rounds to run (default 1); runs per newly proposed batch (default 8) and their
            acquisition strategy (default "thompson", :meth:`propose`).
        executor, parallel, ray_address, slurm : optional
            Where jobs run: ``"local"`` (default), ``"ray"`` (the ``ray`` extra; a local
            instance on 127.0.0.1 unless ``ray_address`` names a cluster) or ``"slurm"`` (the
            ``slurm`` extra: submitit parameters in ``slurm``, e.g. ``{"slurm_partition":
            "gpu", "timeout_min": 600}``, ``"cluster": "local"`` to run them here);
            ``parallel`` (default 1) jobs at a time (local processes, or Ray CPUs).
        retries, timeout, stale_after : optional
            Extra launches of a failing run before it is marked failed (default 1); seconds
            per launch (default: no limit); seconds without heartbeat after which a dead
            runner's running runs are taken back (default
            :data:`bayesmix.loop.runner.DEFAULT_STALE_AFTER_S`).
        workdir, cwd, env : optional
            The runs' folders (default ``<ledger stem>-runs`` next to the ledger); where
            commands start (default: the current directory); extra environment variables.
        recommend, on_round : optional
            Fit and recommend at the end (default True, :meth:`recommend`); called with a
            :class:`bayesmix.loop.runner.RoundReport` after each round (e.g. an MLflowTracker).
        **propose_options
            Passed to :meth:`propose` (``target``, ``weights``, ``min_distance``, ``pool``...).

        Returns
        -------
        bayesmix.loop.runner.RunSummary
            Rounds done, runs completed and failed, retries, ``interrupted``, and the
            ``recommendation`` (a DecisionReport, or None).
        """
        from bayesmix.loop.executors import get_executor
        from bayesmix.loop.runner import DEFAULT_STALE_AFTER_S, Runner

        runs_dir = self.path.with_name(f"{self.path.stem}-runs") if workdir is None else workdir
        folder = Path(runs_dir) / "slurm"
        runner_exec = get_executor(executor, parallel, ray_address, slurm=slurm, folder=folder)
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
