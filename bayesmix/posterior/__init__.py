"""The fitted posterior: predictions, intervals, diagnostics, learned extrapolation error."""
