"""Multimodal two-tower model: item tower (media fusion + ID), user tower (history), graphs, losses.

Importing this package registers the `two_tower_graph` user-encoder loader with
`recsys.artifact.USER_ENCODER_LOADERS`, so `load_run(dir).user_encoder` works for our runs, and
the `content-only` baseline with `recsys.baselines` (`recsys evaluate --baseline content-only`).

Public API:
    ModelConfig, LossConfig        typed hyperparameters
    ItemTower, UserTower, TwoTower the networks; TwoTowerTrainTask the objective wrapper
    build_model                    model registry
    project_content                encoder output -> a run's item space (search endpoint)
"""
from recsys.baselines.registry import register_baseline
from recsys.models.config import LossConfig, ModelConfig
from recsys.models.content_baseline import ContentOnlyTwoTower, content_only_factory
from recsys.models.ensemble import ENSEMBLE_KIND, EnsembleUserEncoder
from recsys.models.item_tower import ItemCatalog, ItemTower
from recsys.models.registry import MODEL_BUILDERS, build_model
from recsys.models.serving import ENCODER_KIND, GraphUserEncoder, load_user_encoder, project_content
from recsys.models.task import TaskInputs, TwoTowerTrainTask
from recsys.models.two_tower import GraphContext, TwoTower
from recsys.models.user_tower import UserHistories, UserTower

register_baseline(ContentOnlyTwoTower.name, content_only_factory)

__all__ = ["ContentOnlyTwoTower", "ENCODER_KIND", "ENSEMBLE_KIND", "EnsembleUserEncoder", "GraphContext",
           "GraphUserEncoder", "ItemCatalog", "ItemTower", "LossConfig", "MODEL_BUILDERS", "ModelConfig", "TaskInputs",
           "TwoTower", "TwoTowerTrainTask", "UserHistories", "UserTower", "build_model", "load_user_encoder",
           "project_content"]
