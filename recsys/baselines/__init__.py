"""Reference recommenders (MostPopular, ItemKNN, BPR-MF, LightGCN, EASE, SASRec) that every trained model must beat.

They share one interface (`fit(dataset, train_interactions)`, `score(user_index_batch)`) and run
through the same evaluation harness as trained runs; `BASELINES` is the name -> factory registry
other modules extend with `register_baseline`.
"""
from recsys.baselines.base import Baseline, interaction_matrix
from recsys.baselines.registry import BASELINES, TUNED, make_baseline, register_baseline

__all__ = ["BASELINES", "Baseline", "TUNED", "interaction_matrix", "make_baseline", "register_baseline"]
