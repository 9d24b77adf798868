"""Regime models in research: labels, purged walk-forward evaluation against naive baselines,
MLflow tracking and registry, and the out-of-sample regime series the overlay study uses."""
