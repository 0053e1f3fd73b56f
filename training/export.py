"""Write the run directory (the model artefact) through `recsys.artifact.save_run`, plus two extras:

- `item_media_vectors.npz`: per medium, every item's L2-normalised projection (zero rows where the
  item lacks the medium), read by the cross-media evaluation;
- `content_projection.pt`: the per-medium projection weights, so `recsys.models.project_content`
  can put a search query (encoder output) into the item space.

An ensemble run (`train.ensemble > 1`) stores every one of these as the members' weighted
concatenation (`recsys.models.ensemble`), so readers see one two-tower either way.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl
import torch

from recsys.artifact import l2_normalise, save_run
from recsys.models.ensemble import concat_members, ensemble_payload, ensemble_temperature, member_weights
from recsys.models.content_projection import PROJECTION_FILE, ensemble_projection_payload, projection_payload
from recsys.models.popularity_prior import prior_counts
from recsys.metrics import ScoreFn, dot_product_scorer
from recsys.new_items import NewItemPolicy, item_prior
from recsys.models.user_encoder import encoder_payload
from recsys.models.task import TwoTowerTrainTask
from recsys.models.two_tower import TowerOutput
from training.checkpoint import TrainState
from training.config import TrainConfig
from training.data import TrainingData
from training.served_events_fold import dataset_reference

MEDIA_VECTORS_FILE = "item_media_vectors.npz"
MODEL_KIND = "two_tower"
MEMBERS_DIR = "members"  # ensemble members' checkpoints: RUN_DIR/members/<k>/checkpoints/


def _items_table(data: TrainingData) -> pl.DataFrame:
    counts = data.item_counts.numpy()
    index = data.dataset.items["item_index"].to_numpy()
    table = data.dataset.items.select("item_id", "item_index", "media", "title").with_columns(
        pl.Series("popularity", counts[index], dtype=pl.Int64))
    if data.not_candidates.any():  # taken down (training.catalogue_fold): in the tables, never served
        table = table.with_columns(pl.Series("taken_down", data.not_candidates[index], dtype=pl.Boolean))
    return table


def _users_table(data: TrainingData) -> pl.DataFrame:
    ids = data.dataset.interactions.select("user_index", "user_id").unique("user_index").sort("user_index")
    n_train = np.bincount(data.train_users.numpy(), minlength=data.n_users)
    return ids.with_columns(pl.Series("n_train", n_train[ids["user_index"].to_numpy()], dtype=pl.Int64))


class RunMember(Protocol):
    """What the export reads of any member of a run: a trained tower (`Member`) or the closed-form member
    (`training.closed_form.ClosedFormMember`). Each part is unit-norm; 1/sqrt(temperature) is its scale."""

    @property
    def temperature(self) -> float: ...

    def user_vectors(self) -> np.ndarray: ...

    def item_vectors(self) -> np.ndarray: ...

    def encoder_payload(self) -> dict[str, Any]: ...

    def projection_payload(self) -> dict[str, Any]: ...

    def media_vectors(self, data: TrainingData) -> dict[str, np.ndarray]: ...


@dataclass
class Member:
    """One trained tower of a run (a single-tower run has one): its config, best weights and outputs."""

    config: TrainConfig
    task: TwoTowerTrainTask
    output: TowerOutput
    state: TrainState
    wrapper: str = "TwoTowerTrainTask"
    digests: list[str] = field(default_factory=list)

    @property
    def temperature(self) -> float:
        return float(self.task.model.temperature.detach())

    # `RunMember`: what the export reads of any member
    def user_vectors(self) -> np.ndarray:
        return self.output.users.detach().numpy()

    def item_vectors(self) -> np.ndarray:
        return self.output.items.detach().numpy()

    def encoder_payload(self) -> dict[str, Any]:
        return _encoder(self)

    def projection_payload(self) -> dict[str, Any]:
        return _projection(self)

    def media_vectors(self, data: TrainingData) -> dict[str, np.ndarray]:
        return media_vectors(self.output, data)


def media_vectors(output: TowerOutput, data: TrainingData) -> dict[str, np.ndarray]:
    out = {}
    for j, medium in enumerate(data.catalog.media):
        vectors = l2_normalise(output.item_encoding.media[medium].detach().numpy())
        vectors[~data.catalog.present[:, j].numpy()] = 0.0
        out[medium] = vectors
    return out


def _weights(members: list[RunMember]) -> np.ndarray:
    return member_weights([m.temperature for m in members])


def combined_vectors(members: list[RunMember]) -> tuple[np.ndarray, np.ndarray]:
    """(user vectors, item vectors) of the run: the tower's own, or the members' weighted concatenation
    (towers, and the closed-form member when valid kept one: `training.closed_form`)."""
    if len(members) == 1:
        return members[0].user_vectors(), members[0].item_vectors()
    w = _weights(members)
    return (concat_members([m.user_vectors() for m in members], w),
            concat_members([m.item_vectors() for m in members], w))


def _new_item_coordinate(member: Member) -> float | None:
    """The popularity coordinate an item with no train interaction gets (what a live new item carries)."""
    model, cfg = member.task.model, member.config.model
    if model.popularity is None:
        return None
    counts = prior_counts(member.task.inputs.item_counts, cfg.cold_item_prior)
    logs = torch.log1p(torch.as_tensor(counts, dtype=torch.float32))
    z = (torch.log1p(torch.tensor(float(cfg.cold_item_prior))) - logs.mean()) / logs.std().clamp(min=1e-6)
    with torch.no_grad():
        return float(torch.tanh(model.popularity.item_slope * z + model.popularity.item_offset))


def _projection(member: Member) -> dict[str, Any]:
    """The item tower's content path: per-medium projections, the fusion and the new-item prior coordinate."""
    model, cfg = member.task.model, member.config.model
    tower = model.item_tower
    return projection_payload(dict(tower.projections), cfg.projection_hidden, cfg.dim, pad=model.output_dim - cfg.dim,
                              fusion=tower.fusion, fusion_kind=cfg.fusion, media_order=list(tower.media),
                              new_item_coordinate=_new_item_coordinate(member))


def _encoder(member: Member) -> dict[str, Any]:
    model = member.task.model
    return encoder_payload(member.config.model, model, model.serving_tables(member.output, member.task.inputs.graphs))


def user_encoder_payload(members: list[RunMember]) -> dict[str, Any]:
    """The run's served user tower (`user_encoder.pt`): the members' own modules, weights only."""
    if len(members) == 1:
        return members[0].encoder_payload()
    return ensemble_payload([m.encoder_payload() for m in members], _weights(members))


def served_item_prior(data: TrainingData) -> np.ndarray:
    """The new-item prior the run records (`export_run`) on items without train interactions, as
    the feed and `recsys evaluate` add it: the reported metrics are those of the served ranking.
    Items that are no candidates (taken down, `training.catalogue_fold`) get -inf, as nothing serves them."""
    prior = item_prior(NewItemPolicy().boost, ~data.warm.numpy())
    if data.not_candidates.any():
        prior[data.not_candidates] = -np.inf
    return prior


def served_scorer(data: TrainingData, users: np.ndarray, items: np.ndarray) -> ScoreFn:
    """The served ranking of these vectors: user . item plus the run's new-item prior."""
    return dot_product_scorer(users, items, served_item_prior(data))


def served_user_vectors(encoder: dict[str, Any], data: TrainingData, events: pl.DataFrame | None = None) -> np.ndarray:
    """Every user's vector computed by the served encoder from their feature window.

    The run's `user_vectors.npy` (what evaluation ranks with) come from here, so offline metrics
    describe exactly what the server computes from the online store's window. `events`: the
    windows at the end of these rows instead of train (ranking test after valid reads train + valid).
    """
    from recsys.artifact import USER_ENCODER_LOADERS  # noqa: PLC0415
    from training.evaluation_runs import users_as_of  # noqa: PLC0415

    served = USER_ENCODER_LOADERS[encoder["kind"]](encoder, None)
    if events is None:
        return served.encode(data.train_histories())
    return users_as_of(served, data.window.size, events, data.n_users)


def export_run(run_dir: Path, config: TrainConfig, data: TrainingData, members: list[RunMember],
               metrics: dict[str, Any], model_version: str | None = None,
               encoder: dict[str, Any] | None = None, users: np.ndarray | None = None) -> Path:
    """Save everything serving and evaluation read; returns the run directory.

    `encoder` / `users`: the served user tower and its vectors when the caller already built them.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _, items = combined_vectors(members)
    closed = [m for m in members if not isinstance(m, Member)]  # the closed-form member (training.closed_form)
    encoder = encoder if encoder is not None else user_encoder_payload(members)
    users = users if users is not None else served_user_vectors(encoder, data)
    if len(members) == 1:
        projection = members[0].projection_payload()
        media = members[0].media_vectors(data)
        temperature = members[0].temperature
    else:
        w = _weights(members)
        projection = ensemble_projection_payload([m.projection_payload() for m in members], list(w))
        per_member = [m.media_vectors(data) for m in members]
        media = {medium: concat_members([p[medium] for p in per_member], w) for medium in per_member[0]}
        temperature = ensemble_temperature([m.temperature for m in members])
    torch.save(projection, run_dir / PROJECTION_FILE)
    np.savez(run_dir / MEDIA_VECTORS_FILE, **media)
    version = model_version or f"{MODEL_KIND}-{data.dataset.name}-{config.fingerprint()[:8]}"
    # run.json names what `load_dataset` accepts: the registered name, or the folder's absolute path
    dataset_ref = dataset_reference(config.data.dataset, data.dataset)
    resolved = config.model_dump(mode="json")
    resolved["split_strategy"] = data.split_strategy
    return save_run(
        run_dir, model_version=version, dataset=dataset_ref, data_version=data.data_version, config=resolved,
        items=_items_table(data), users=_users_table(data), item_vectors=items, user_vectors=users,
        user_encoder_payload=encoder, metrics=metrics,
        extra_meta={"model_kind": MODEL_KIND, "split_strategy": data.split_strategy, "encoders": data.content.encoders,
                    "cold_items": int((~data.warm).sum()), "temperature": temperature,
                    "ensemble": sum(isinstance(m, Member) for m in members),  # towers
                    "member_temperatures": [m.temperature for m in members],
                    **({"closed_form": closed[0].describe()} if closed else {}),
                    "media": list(data.catalog.media), "config_fingerprint": config.fingerprint(),
                    # the feed's treatment of items without interactions, chosen on TikTok valid for the default
                    # config (recsys.new_items); serving reads it unless RECSYS_SERVE_NEW_ITEM_BOOST is set
                    "new_item_policy": dataclasses.asdict(NewItemPolicy()),
                    "feature_window": data.window.describe(),
                    **({"catalogue_log": data.catalogue_record()} if data.catalogue is not None else {}),
                    **({"served_events": data.served_events.describe()} if data.served_events is not None else {})})
