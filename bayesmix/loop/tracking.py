"""Log each round of the loop to MLflow: the per-round hook of ``bayesmix run --mlflow``.

:class:`MLflowTracker` is a callable for ``Runner(on_round=)`` / ``Experiment.run(on_round=)``:
one MLflow run per call of the loop, named after the ledger; at each round it logs, with the
round as the step, how many runs completed and failed in it, the completed total, and per
validation domain the lowest loss observed so far (``best_loss.<domain>``) and the round's
mean. ``tracking_uri``: an MLflow server (``http://...``) or a local folder (MLflow's file
store, which MLflow 3 keeps in maintenance mode: allowed here for local use). Needs the
``tracking`` extra (``pip install 'bayesmix[tracking]'``, MLflow's lightweight client).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from bayesmix import errors
from bayesmix.data.table import LOSS_PREFIX


def _metric_name(text: str) -> str:
    """MLflow metric names allow letters, digits, ``_ - . / :`` and spaces."""
    return re.sub(r"[^A-Za-z0-9_\-./: ]", "_", text)


class MLflowTracker:
    """Per-round hook logging to MLflow (see the module docstring)."""

    def __init__(
        self,
        tracking_uri: str | os.PathLike | None = None,
        experiment: str = "bayesmix",
        run_name: str | None = None,
    ):
        try:
            import mlflow
        except ImportError:
            raise errors.OptionError(
                "--mlflow needs MLflow: pip install 'bayesmix[tracking]'"
            ) from None
        self._mlflow = mlflow
        uri = None if tracking_uri is None else str(tracking_uri)
        if uri is not None and "://" not in uri:  # a local folder: MLflow's file store
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = Path(uri).absolute().as_uri()
        self.tracking_uri, self.experiment, self.run_name = uri, experiment, run_name
        self.run_id: str | None = None

    def __call__(self, report) -> None:
        mlflow = self._mlflow
        if self.tracking_uri is not None:
            mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_experiment(self.experiment)
        name = self.run_name or Path(report.ledger).stem
        with mlflow.start_run(run_id=self.run_id, run_name=None if self.run_id else name) as run:
            if self.run_id is None:
                self.run_id = run.info.run_id
                mlflow.log_param("ledger", report.ledger)
            frame = report.losses
            metrics = {
                "round_completed": float(len(report.completed)),
                "round_failed": float(len(report.failed)),
                "completed_total": float(len(frame)),
                "elapsed_s": float(report.elapsed_s),
            }
            this_round = frame[frame["run"].isin(report.completed)]
            for col in (c for c in frame.columns if c.startswith(LOSS_PREFIX)):
                dom = _metric_name(col[len(LOSS_PREFIX) :])
                if frame[col].notna().any():
                    metrics[f"best_loss.{dom}"] = float(frame[col].min())
                if this_round[col].notna().any():
                    metrics[f"round_mean_loss.{dom}"] = float(this_round[col].mean())
            mlflow.log_metrics(metrics, step=int(report.round))
