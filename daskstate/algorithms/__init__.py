"""One module per algorithm: its State, then the estimator that wraps it."""
