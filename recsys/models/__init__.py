"""Multimodal two-tower model: item tower (media fusion + ID), user tower (history), graphs, losses.

Importing this package registers the `two_tower_graph` user-encoder loader with
`recsys.artifact.USER_ENCODER_LOADERS`, so `load_run(dir).user_encoder` works for our runs, and
nothing else (the `content-only` baseline trains through `training`, which registers it).

Public API:
    ModelConfig, LossConfig        typed hyperparameters
    ItemTower, UserTower, TwoTower the networks; TwoTowerTrainTask the objective wrapper
    build_model                    model registry
    project_content                encoder output -> a run's item space (search endpoint)
"""
from recsys.models.config import LossConfig, ModelConfig
from recsys.models.ensemble import ENSEMBLE_KIND, MemberConcat
from recsys.models.item_tower import ItemCatalog, ItemTower
from recsys.models.registry import MODEL_BUILDERS, build_model
from recsys.models.content_projection import project_content
from recsys.models.user_encoder import ENCODER_KIND, ServedUserTower, TowerUserEncoder, load_user_encoder
from recsys.models.task import TaskInputs, TwoTowerTrainTask
from recsys.models.two_tower import GraphContext, TwoTower
from recsys.models.user_tower import UserHistories, UserTower


__all__ = ["ENCODER_KIND", "ENSEMBLE_KIND", "GraphContext", "ItemCatalog", "MemberConcat", "ServedUserTower",
           "TowerUserEncoder", "ItemTower", "LossConfig", "MODEL_BUILDERS", "ModelConfig", "TaskInputs",
           "TwoTower", "TwoTowerTrainTask", "UserHistories", "UserTower", "build_model", "load_user_encoder",
           "project_content"]
