"""The active-learning loop: designs, acquisition, ledger, experiment, runner, executors."""
