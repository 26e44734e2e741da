"""Fitting: NUTS with nutpie, the gate and its retries, the compile cache, law comparison."""
