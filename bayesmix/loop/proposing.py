"""One call of :meth:`Experiment.propose <bayesmix.loop.experiment.Experiment.propose>`, step by
step: check the request, gather the ledger's state, fit or reuse the posterior, read the
candidate pool, choose and record the batch, note what the batch means, write the hand-off file.

The batch is recorded in one ledger transaction that allocates the round and re-checks the
minimum distance against every run recorded by then. When another proposer recorded runs too
close to the batch in the meantime, the batch is chosen again with those runs pending (no
refit), up to :data:`PROPOSE_ATTEMPTS` times. The hand-off file (CSV/JSON) is checked before any
fit and written after the runs are recorded; a round whose file was never written is reported
in the notes and can be written again from the ledger (``Experiment.export``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bayesmix import errors
from bayesmix.data.table import MIX_PREFIX
from bayesmix.loop import acquire, design
from bayesmix.loop.batch import Batch
from bayesmix.loop.candidates import DEFAULT_CANDIDATES, Candidates
from bayesmix.loop.fidelity import SCALE_INPUTS, at_menu_entry, spans_sizes, spread_over_menu
from bayesmix.loop.ledger import (
    Fidelity,
    Ledger,
    ProposalConflictError,
    check_proposals_path,
    resolve_fidelity,
    write_proposals,
)
from bayesmix.loop.ledger_fidelity import check_caps_target
from bayesmix.loop.refit import check_domains

if TYPE_CHECKING:
    from bayesmix.posterior.posterior import Posterior

#: How many times a batch is chosen again when a concurrent proposer recorded runs too close to
#: it while it was being chosen.
PROPOSE_ATTEMPTS = 3


@dataclass(frozen=True)
class ProposeRequest:
    """The options of one proposal, checked when built (parameters of
    :meth:`Experiment.propose <bayesmix.loop.experiment.Experiment.propose>`;
    ``n_candidates`` is its ``candidates``, ``random_seed`` already defaulted; ``menu``: the
    keywords of :meth:`Experiment.set_menu` to record first, or None)."""

    n: int
    strategy: str
    pool: object = None
    out: str | os.PathLike | bool | None = None
    force: bool = False
    target: str | None = None
    weights: object = None
    min_distance: float | None = None
    n_candidates: int = DEFAULT_CANDIDATES
    cost_power: float = 1.0
    refit: bool = False
    random_seed: int | None = 0
    menu: Mapping | None = None
    size: str | None = None

    def __post_init__(self):
        n = self.n
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise errors.OptionError(f"n={n!r} must be an integer >= 1", param="n")
        if self.min_distance is not None and not self.min_distance >= 0:
            raise errors.OptionError(
                f"min_distance={self.min_distance!r} must be >= 0", param="min_distance"
            )
        if not self.cost_power >= 0:
            raise errors.OptionError(
                f"cost_power={self.cost_power!r} must be >= 0", param="cost_power"
            )
        if self.n_candidates < 1:
            raise errors.OptionError(
                f"candidates={self.n_candidates!r} must be >= 1", param="candidates"
            )
        acquire.get_strategy(self.strategy)  # an unknown name fails now, before any fit

    @property
    def pool_path(self) -> str | os.PathLike | None:
        """The pool file, when the pool is one."""
        return self.pool if isinstance(self.pool, (str, os.PathLike)) else None

    @property
    def explicit_out(self) -> str | os.PathLike | None:
        """The hand-off path given (None when ``out`` is None, True or False)."""
        return None if self.out is None or isinstance(self.out, bool) else self.out


@dataclass
class RoundState:
    """What the ledger says before anything is chosen: the ``planned`` round, ``notes`` for the
    caller, and where the hand-off file goes (a path, a function of the round, or None)."""

    planned: int
    notes: list[str]
    handoff: Path | Callable[[int], Path] | None


@dataclass(frozen=True)
class FitState:
    """The posterior a batch is chosen from (all None before any completed run): the
    posterior, its file, the ledger's fit record and the acquisition's Belief."""

    posterior: Posterior | None = None
    path: Path | None = None
    record: dict | None = None
    belief: acquire.Belief | None = None


@dataclass
class Recorded:
    """The batch as recorded: the Batch, the run ids, the fit record stored with the round,
    and the runs' ledger rows with their round."""

    batch: Batch
    ids: list[str]
    round_record: dict | None
    rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    round_no: int = -1


class Proposer:
    """The proposals of one experiment ledger. ``posterior(led, refit, round_no)`` returns
    (posterior, path, fit record) for the completed results; ``say`` receives one line per
    step; ``default_handoff(round)`` is the hand-off file of ``out=True``; ``law``: the law
    the posterior is fitted with (its ``min_runs``; its inputs for ``target-info``)."""

    def __init__(
        self,
        ledger_path: Path,
        *,
        posterior: Callable[[Ledger, bool, int], tuple],
        say: Callable[[str], None],
        default_handoff: Callable[[int], Path],
        law=None,
    ):
        self.path = Path(ledger_path)
        self.posterior = posterior
        self.say = say
        self.default_handoff = default_handoff
        self.law = law
        self.min_runs = 1 if law is None else law.min_runs

    def run(self, req: ProposeRequest) -> pd.DataFrame:
        """Choose ``req.n`` runs, record them, write their hand-off file; the proposal frame
        (:func:`proposal_frame`)."""
        with Ledger.open(self.path) as led:
            state = self.gather(led, req)
            cands = self.candidates(led, req, state.notes)
            fit = self.fit(led, req, state.planned)
            rec = self.choose_and_record(led, req, fit, cands, state.handoff)
            state.notes += [note for note in rec.batch.notes if note not in state.notes]
            state.notes += self.range_notes(fit, rec, state.planned)
            written = self.write_handoff(led, req, rec, state)
        return proposal_frame(
            rec.rows,
            rec.batch,
            {
                "round": rec.round_no,
                "strategy": rec.batch.strategy,
                "path": written,
                "posterior": fit.path,
                "notes": state.notes,
                "fit": rec.round_record,
            },
        )

    # ------------------------------------------------------------------------------- steps
    def gather(self, led: Ledger, req: ProposeRequest) -> RoundState:
        """A writable ledger, the menu to record and the strategy's needs, hand-off files an
        interrupted propose never wrote (written now, as notes), the planned round and the
        hand-off file, checked before any fit; then the menu recorded (a note)."""
        led.check_writable()  # a read-only or locked ledger: now, not after a fit
        fid = led.fidelity()
        new = None if req.menu is None else resolve_fidelity(fid, **req.menu)
        check_strategy(req.strategy, new or fid, self.law)
        if new is not None:
            check_caps_target(led.settings, new.target)  # before the hand-off files
        sized(new or fid, req.size)  # a size not in the menu: now, before any fit
        notes = recover_handoffs(led)
        planned = led.next_round()
        explicit = req.explicit_out
        handoff: Path | Callable[[int], Path] | None = None
        if explicit is not None:
            handoff = Path(explicit)
        elif req.out is True:
            handoff = self.default_handoff
        if handoff is not None:
            first = handoff(planned) if callable(handoff) else handoff
            check_proposals_path(first, overwrite=req.force, inputs=[self.path, req.pool_path])
        if new is not None:
            led.set_menu(new.menu, new.target)
            notes.append(f"recorded: {new.describe()}")
        return RoundState(planned, notes, handoff)

    def candidates(self, led: Ledger, req: ProposeRequest, notes: list[str]):
        """The candidate pool (None: the feasible set); its notes are added to ``notes``."""
        if req.pool is None:
            return None
        pool = req.pool
        cands = pool if isinstance(pool, Candidates) else read_pool(pool, led)
        notes += list(cands.notes)
        return cands

    def fit(self, led: Ledger, req: ProposeRequest, planned: int) -> FitState:
        """The posterior of the completed runs (reused or refitted) and its Belief under the
        objective: ``target``, else ``weights``, else the ledger's target weights, else equal
        weights. Empty while fewer runs are completed than the law needs (``min_runs``): the
        batch then extends the initial design. Runs of earlier domain sets count when their
        maps keep them (the fit reads them in the current set)."""
        done = sum(ds["in_fit"] for ds in led.summary()["domain_sets"])
        if done < self.min_runs:
            if done:
                self.say(f"{done} completed run(s), the law needs {self.min_runs}: no fit yet")
            return FitState()
        post, path, record = self.posterior(led, req.refit, planned)
        check_domains(post, led, path)
        if req.target:
            w, t = None, req.target
        elif req.weights is not None:
            w, t = req.weights, None
        else:
            w, t = led.settings.get("target_weights") or None, None
        fid = sized(led.fidelity(), req.size)
        inputs = None
        if fid is not None and spans_sizes(post.law):
            inputs = fid.target  # the belief at the target run's scale
        belief = acquire.Belief.from_posterior(post, weights=w, target=t, inputs=inputs)
        return FitState(post, path, record, belief)

    def choose_and_record(self, led, req, fit: FitState, cands, handoff) -> Recorded:
        """Choose the batch around the pending and completed runs and record it as a new
        round; chosen again (up to :data:`PROPOSE_ATTEMPTS` times) when a concurrent proposer
        recorded runs too close to it meanwhile."""
        default = (
            design.DEFAULT_MIN_DISTANCE if fit.belief is None else acquire.DEFAULT_MIN_DISTANCE
        )
        dist = req.min_distance if req.min_distance is not None else default
        for attempt in range(PROPOSE_ATTEMPTS):
            batch, round_record = self.choose(led, req, fit, cands)
            try:
                ids = led.add_proposals(
                    batch.mixtures,
                    batch.strategy,
                    None,
                    posterior=fit.path,
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
                self.say(
                    f"{err.problem}: another proposer recorded runs meanwhile; "
                    "choosing again with them pending"
                )
        runs = led.runs()
        rows = runs[runs["run"].isin(ids)].reset_index(drop=True)
        return Recorded(batch, ids, round_record, rows, int(rows["round"].iloc[0]))

    def choose(self, led: Ledger, req: ProposeRequest, fit: FitState, cands):
        """(Batch, fit record of the round) for the ledger as it is now: an initial design
        before any completed run, else the strategy on the belief."""
        pending = led.pending().to_numpy(float)
        completed = led.runs("completed")
        done = completed[[MIX_PREFIX + d for d in led.train_domains]].to_numpy(float)
        done = done[~np.isnan(done).any(axis=1)]  # runs of an earlier domain set a map left out
        options = {
            "pool": cands,
            "pending": pending,
            "existing": done,
            "min_distance": req.min_distance,
            "random_seed": req.random_seed,
            "cost_power": req.cost_power,
        }
        belief = fit.belief
        fid = sized(led.fidelity(), req.size)
        if belief is None:
            self.say("too few completed runs to fit: proposing an initial design")
            batch = acquire.initial_batch(led.constraints, req.n, **options)
            return (batch if fid is None else spread_over_menu(batch, fid.menu, self.law)), None
        if fid is not None and acquire.get_strategy(req.strategy).name in (
            acquire.MULTIFIDELITY_STRATEGIES
        ):  # checked in gather: a menu is recorded
            if cands is None:
                cands = acquire.Candidates.continuous(
                    led.constraints, req.n_candidates, belief=belief, random_seed=req.random_seed
                )
            options["pool"] = acquire.menu_candidates(cands, fid.menu)
        self.say(
            f"choosing {req.n} runs by {req.strategy} ({belief.n_samples} draws; "
            f"objective: {belief.weights_description}; {len(pending)} "
            f"pending, {len(done)} completed)"
        )
        batch = acquire.propose(
            belief,
            req.n,
            strategy=req.strategy,
            constraints=led.constraints,
            n_candidates=req.n_candidates,
            **options,
        )
        if fid is not None and all(batch.planned(k) is None for k in ("n_params", "steps")):
            batch = at_menu_entry(batch, fid.menu)  # a single-scale strategy: one entry
        round_record = {
            **(fit.record or {}),
            "strategy": batch.strategy,
            "seed": req.random_seed,
            "objective": belief.weights_description,
        }
        if batch.ids is not None:
            round_record["pool"] = str(req.pool_path) if req.pool_path else "candidates"
            round_record["pool_rows"] = [str(i) for i in batch.ids]
        return batch, round_record

    @staticmethod
    def range_notes(fit: FitState, rec: Recorded, planned: int) -> list[str]:
        """Notes on the recorded batch: proposals outside the fitted runs' mixtures, and a
        round number other than planned (another proposer came first)."""
        notes = []
        if fit.posterior is not None:
            check = fit.posterior.mixture_range().check(rec.batch.mixtures)
            if not check["inside"].all():
                notes.append(
                    f"{int((~check['inside']).sum())} of {len(check)} proposals lie outside "
                    "the fitted runs' mixtures (exploration: their predictions rest on the "
                    "law's form)"
                )
        if rec.round_no != planned:
            notes.append(
                f"another proposer recorded round {planned} meanwhile: these runs "
                f"are round {rec.round_no}"
            )
        return notes

    def write_handoff(self, led, req: ProposeRequest, rec: Recorded, state: RoundState):
        """Write the recorded runs' hand-off file and mark it written (None without one). A
        failed write after the runs were recorded is a LedgerError naming the way back."""
        handoff = state.handoff
        if handoff is None:
            return None
        written = handoff(rec.round_no) if callable(handoff) else handoff
        try:
            moved = rec.round_no != state.planned
            if req.explicit_out is None and moved and written.exists() and not req.force:
                raise errors.OptionError("a file already exists here", source=str(written))
            write_proposals(rec.rows, written)
        except (OSError, errors.BayesmixError) as err:
            raise errors.LedgerError(
                f"runs {rec.ids[0]} to {rec.ids[-1]} are recorded as round {rec.round_no} but "
                f"their file {written} could not be written: {err}",
                source=str(self.path),
                hint=f"write it again from the ledger with Experiment.export({rec.round_no}) "
                "(the export command)",
            ) from None
        led.mark_handoff_written(rec.round_no)
        return written


def sized(fid: Fidelity | None, size: str | None) -> Fidelity | None:
    """The ledger's menu and target for a proposal of ``size`` (None: the whole menu): the
    menu's entries of that size (:meth:`~bayesmix.loop.fidelity.Menu.restrict`); an
    OptionError naming ``size`` when the ledger has no menu or none of its entries match."""
    if size is None:
        return fid
    if fid is None:
        raise errors.OptionError(
            f"size={size!r} needs the ledger's proxy menu",
            hint="record it with --menu SIZE@STEPS,... --target-scale SIZE@STEPS",
            param="size",
        )
    return replace(fid, menu=fid.menu.restrict(size))


def check_strategy(strategy: str, fid: Fidelity | None, law=None) -> None:
    """Before any fit or launch: a multi-fidelity strategy needs a menu and target scale
    (``fid``) and a law over model size and tokens (``law``; None: not checked); OptionError
    naming the strategy. A single-scale strategy needs neither."""
    name = acquire.get_strategy(strategy).name
    if name not in acquire.MULTIFIDELITY_STRATEGIES:
        return
    if fid is None:
        raise errors.OptionError(
            f"strategy={strategy!r} needs the ledger's proxy menu and target scale",
            hint="record them with --menu SIZE@STEPS,... --target-scale SIZE@STEPS "
            "(Experiment.set_menu)",
            param="strategy",
        )
    missing = [k for k in SCALE_INPUTS if law is not None and k not in law.inputs]
    if missing:
        raise errors.OptionError(
            f"strategy={strategy!r} needs a law over model size and tokens: law "
            f"{law.name!r} has no input {missing[0]!r}",
            hint="fit a law over scale, e.g. --model scaling",
            param="strategy",
        )


def menu_to_record(
    path: str | os.PathLike,
    strategy: str,
    law=None,
    menu: Mapping | None = None,
    size: str | None = None,
) -> Fidelity | None:
    """The menu and target scale a call records (``menu``: the keywords of
    :meth:`Experiment.set_menu`; None: nothing to record, returns None), resolved against the
    ledger's (what is not given is kept) and checked with the strategy's needs
    (:func:`check_strategy`), the token caps (:func:`check_caps_target`) and a proposal
    ``size`` (:func:`sized`); nothing is written. ``bayesmix run`` records it before its
    first launch."""
    with Ledger.open(path) as led:
        current, settings = led.fidelity(), led.settings
    new = None if menu is None else resolve_fidelity(current, **menu)
    check_strategy(strategy, new or current, law)
    if new is not None:
        check_caps_target(settings, new.target)
    sized(new or current, size)
    return new


def recover_handoffs(led: Ledger) -> list[str]:
    """Write the hand-off file of every round whose runs were recorded but whose file was not
    (a propose killed in between), from the ledger, so no proposed run is in no file; one
    note per round. A file already at the recorded path (written, then killed before it was
    marked) is kept. LedgerError naming the way back when a file cannot be written."""
    notes = []
    for r, stored in led.missing_handoffs().items():
        path = led.folder / stored
        try:
            if not path.exists():
                write_proposals(led.handoff_frame(r), path)
        except (OSError, errors.BayesmixError) as err:
            raise errors.LedgerError(
                f"round {r}'s runs are recorded but their file {path} was never written, and "
                f"writing it now failed: {err}",
                source=str(led.path),
                hint=f"write it elsewhere with Experiment.export({r}, path)",
            ) from None
        led.mark_handoff_written(r, path)
        notes.append(
            f"round {r}'s runs were recorded but their file was never written (interrupted): "
            f"written now from the ledger to {path}"
        )
    return notes


def proposal_frame(runs: pd.DataFrame, batch: Batch | None, attrs: dict) -> pd.DataFrame:
    """run, round, strategy + the batch's own columns (score, cost, sizes, mix.*); without a
    batch (a design recorded at creation), the runs' planned sizes and mixtures.
    ``attrs`` go to ``frame.attrs``."""
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


def read_pool(pool, led: Ledger) -> Candidates:
    """Candidates from a pool file (CSV, JSON, Parquet) or DataFrame, checked against the
    ledger's domains and constraints."""
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
