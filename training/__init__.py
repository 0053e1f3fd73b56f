"""Training jobs, offline evaluation and experiment reports built on `recsys`."""
