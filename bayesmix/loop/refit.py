"""An experiment's posterior: reuse the saved fit while nothing changed, else refit and save.

:class:`PosteriorStore` answers "the posterior of the completed results" for one
:class:`~bayesmix.loop.experiment.Experiment`. It refits only when the completed results
(:func:`results_digest`), the model or the MCMC settings (:data:`FIT_SETTINGS`) changed since
the ledger's last fit record; otherwise it loads the saved file (checked by its SHA-256) and
keeps the last one loaded in memory. A fit is saved next to the ledger as
``<ledger>.posterior-round<N>.nc`` (N: the round it is for; ``-2``, ``-3``... when the name is
taken, never overwritten: :func:`save_new`) and its record is stored in the ledger at once. A
posterior that failed its diagnostics gate is announced with a
:class:`bayesmix.posterior.diagnostics.ConvergenceWarning` each time it is used.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bayesmix import errors
from bayesmix.data.table import RunTable
from bayesmix.loop.ledger import Ledger, file_hash
from bayesmix.posterior.diagnostics import ConvergenceWarning

#: Fit settings that must match for a saved posterior to be reused.
FIT_SETTINGS = ("model", "draws", "tune", "chains")


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


@dataclass(frozen=True)
class FitSettings:
    """How an experiment fits: ``model`` (name or TOML file), MCMC ``draws``, ``tune`` and
    ``chains``, the sampler's ``random_seed`` and ``progressbar``."""

    model: str
    draws: int
    tune: int
    chains: int
    random_seed: int | None = 0
    progressbar: bool = False

    def record(self) -> dict:
        """The settings a saved posterior must match to be reused (:data:`FIT_SETTINGS`)."""
        return {k: getattr(self, k) for k in FIT_SETTINGS}


class PosteriorStore:
    """The posteriors of one experiment: reused while nothing changed, else fitted, saved next
    to the ledger and recorded in it. ``say`` receives one line per step."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say
        self._cache: tuple[str, str, object] | None = None  # (path, hash, Posterior)

    def current(self, led: Ledger, settings: FitSettings, *, refit: bool, round_no: int):
        """(posterior, path, record) of the ledger's completed results for proposals of round
        ``round_no``; record is the fit record (posterior path relative to the ledger's
        folder) with ``reused`` set. ConvergenceWarning when the posterior failed its gate."""
        table = led.run_table()
        digest = results_digest(table)
        last = led.last_fit()
        if (
            last is not None
            and not refit
            and last.get("results_digest") == digest
            and all(last.get(k) == v for k, v in settings.record().items())
        ):
            path = led.resolve_path(last.get("posterior"), last.get("posterior_hash"))
            if path is not None:
                self.say(f"no new results since the last fit: reusing {shown_path(path)}")
                post = self.load(path, last["posterior_hash"])
                record = {**last, "posterior": led.relative_path(path), "reused": True}
                warn_if_unconverged(post)
                return post, path, record
        post, path, record = self._fit(led, table, digest, settings, round_no)
        warn_if_unconverged(post)
        return post, path, record

    def _fit(self, led: Ledger, table: RunTable, digest: str, settings: FitSettings, round_no):
        from bayesmix.inference.fitting import fit

        self.say(
            f"fitting {settings.model!r} to {table.n_runs} completed runs "
            f"({settings.chains} chains x {settings.draws} draws after {settings.tune} tuning)"
        )
        post = fit(
            table,
            settings.model,
            draws=settings.draws,
            tune=settings.tune,
            chains=settings.chains,
            random_seed=settings.random_seed,
            progressbar=settings.progressbar,
            warn=False,
        )
        path = save_new(post, led.folder, f"{Path(led.path).stem}.posterior-round{round_no}")
        self.say(f"posterior saved to {shown_path(path)}")
        record = {
            "posterior": led.relative_path(path),
            "posterior_hash": file_hash(path),
            "results_digest": digest,
            "n_runs": table.n_runs,
            "reused": False,
            "diagnostics_ok": post.diagnostics.ok,
            "diagnostics_warning": post.diagnostics_warning,
            **settings.record(),
        }
        led.record_fit(record)
        self._cache = (str(path), record["posterior_hash"], post)
        return post, path, record

    def load(self, path: Path, digest: str):
        """The Posterior saved at ``path`` (whose hash is ``digest``), from memory when it was
        the last one loaded."""
        from bayesmix.posterior.posterior import Posterior

        if self._cache is not None and self._cache[:2] == (str(path), digest):
            return self._cache[2]
        post = Posterior.load(path)
        self._cache = (str(path), digest, post)
        return post


def warn_if_unconverged(post) -> None:
    """A ConvergenceWarning when ``post`` failed its diagnostics gate (pointing at the caller
    of the Experiment method that asked for the posterior)."""
    if post.diagnostics_warning:
        warnings.warn(post.diagnostics_warning, ConvergenceWarning, stacklevel=5)


def check_domains(post, led: Ledger, path) -> None:
    """DomainNameError unless the posterior's training domains are the ledger's."""
    if tuple(post.train_domains) != tuple(led.train_domains):
        raise errors.DomainNameError(
            "the posterior's training domains differ from the ledger's", source=str(path)
        )


def save_new(post, folder: Path, stem: str) -> Path:
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
