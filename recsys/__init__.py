"""Core library: data types, dataset adapters, content encoders, towers, losses and metrics.

Nothing here imports from `feature_store`, `training` or `serving`; they build on this.
"""
