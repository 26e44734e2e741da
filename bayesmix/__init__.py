"""bayesmix: choose a language model's pre-training data mixture as a Bayesian decision.

Pipeline: run table (``bayesmix.data``) -> model specification (``bayesmix.spec``) -> MCMC fit
(``bayesmix.fit``) -> posterior (``bayesmix.posterior``) -> decide (``optimize``, ``acquire``)
-> ledger -> new runs.
"""

__version__ = "0.1.0"

from bayesmix.errors import BayesmixError
from bayesmix.data import RunTable

__all__ = ["BayesmixError", "RunTable", "__version__"]
