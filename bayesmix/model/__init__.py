"""The model: priors, specifications (models/*.toml), the PyMC model, simulation."""
