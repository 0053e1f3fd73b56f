"""The training job's one typed config: TOML file (repo default `configs/<dataset>.toml`) + CLI overrides.

A run directory stores the fully resolved config, so `recsys train --config RUN_DIR/config.toml`
reproduces a run, and the model can be rebuilt from the run alone.
"""
from __future__ import annotations

import hashlib
import json
import logging
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from recsys.config import get_settings
from recsys.data.splits import TieBreak
from recsys.models.config import LossConfig, ModelConfig

log = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
SelectMetric = Literal["recall@20", "ndcg@20", "recall@10", "ndcg@10", "mrr"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    """Which data, which split, which media."""

    dataset: str = "tiktok"
    split: Literal["predefined", "leave-last-out", "temporal"] = "predefined"
    tie_break: TieBreak = Field("file-order", description=(
        "leave-last-out: which of several events at the same timestamp counts as later. file-order (RecBole's "
        "rule: the later row of the source file) or item-index (the old rule: the higher item index)."))
    media: list[str] | None = Field(None, description="Media to use (None = every medium the dataset has).")
    content_store: str | None = Field(None, description="`recsys embed` store dir for media without precomputed features.")
    served_events: bool = Field(False, description=(
        "Fold the feed's accepted events (the offline store's serving_events) into the train interactions "
        "(`training.served_events_fold`). Off by default: measured on TikTok, an item added live that gets a click "
        "or two ranks lower in the retrained run than it did cold (its low count sinks it on the popularity prior and "
        "it loses the new-item prior; BENCHMARKS.md, \"Served events in training\")."))
    feature_window: int = Field(default_factory=lambda: get_settings().online_history_cap, ge=1, description=(
        "User-history window (events) the user tower sees in training, evaluation and serving; read through "
        "the feature store; a server refuses an online store materialised with another (RECSYS_ONLINE_HISTORY_CAP)."))


class OptimConfig(_Strict):
    """Optimisation, early stopping and reproducibility."""

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(2048, ge=2, description="Global batch (split across ranks under torchrun).")
    lr: float = Field(5e-3, gt=0)
    lr_schedule: Literal["constant", "cosine"] = Field("constant", description=(
        "cosine: the lr decays from `lr` to lr/20 over `epochs` (after the warm-up), so late epochs refine "
        "instead of overshooting the best valid epoch."))
    warmup_epochs: float = Field(0.0, ge=0.0, description="Linear lr warm-up from lr/10, in epochs (0 = none).")
    weight_decay: float = Field(0.0, ge=0)
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0, description=(
        "Evaluate and export an exponential moving average of the weights (0 = off): smooths the "
        "epoch-to-epoch jumps of valid metrics at high learning rates."))
    seed: int = 0
    ensemble: int = Field(1, ge=1, le=16, description=(
        "Independently seeded towers (seeds seed..seed+K-1) whose vectors are concatenated: removes "
        "seed noise; still one user vector · item vectors (recsys.models.ensemble). Costs K x the time."))
    member_overrides: list[dict[str, Any]] = Field(default_factory=list, description=(
        "Ensemble members' own settings: entry k ({\"section.key\" = value}, model / loss / train keys) applies "
        "to member k on top of this config; members past the list, and keys an entry does not name, keep it. "
        "Member k's seed stays seed + k unless its entry sets train.seed; entries past train.ensemble are not "
        "trained. Mixed settings make members disagree more, which is what an ensemble gains from."))
    pilot: list[dict[str, Any]] = Field(default_factory=list, description=(
        "Candidate settings decided on valid before the ensemble trains: each entry ({\"section.key\" = value}, "
        "model / loss / train keys) trains member 0 with those settings; the entry whose tower scores the best "
        "valid `select_metric` applies to every member, and its tower is member 0 (ties: the first). The built-in "
        "recipe decides the logQ strength this way: no statistic of the data it had seen settled it. Empty = off."))
    pilot_epochs: int = Field(3, ge=0, description=(
        "The pilot compares its candidates after this many epochs (their best valid `select_metric` so far) and "
        "trains only the leader on (successive halving); 0: every candidate trains to its end first. On the "
        "seven data sets where both logQ candidates were trained out, the leader at epoch 3 was the final "
        "winner on all seven."))
    patience: int = Field(5, ge=1, description="Epochs without a better valid metric before stopping.")
    refit: bool = Field(False, description=(
        "Once valid has chosen (the pilot's settings, each tower's best epoch, the closed-form member's weight), "
        "train every member again from its seed on train + valid for the epochs its tower chose (the closed-form "
        "member at its chosen lambda, weight and half-life), and serve and test that model: the served model has "
        "learned the most recent labelled events too. The run's valid figures are the selection fit's (the refit "
        "has trained on valid; evaluating it on valid is refused) and its test figure the refit's; metrics.json "
        "keeps the selection fit's test figure beside it. Off: the published protocols train on train alone."))
    select_metric: SelectMetric = "ndcg@20"
    eval_every: int = Field(1, ge=1)
    threads: int = Field(0, ge=0, description="torch intra-op threads (0 = leave torch's default).")


ITEM_FORMS: tuple[str, ...] = ("unit", "lengths")  # the closed-form member's item parts (ties: the first)


class EaseMemberConfig(_Strict):
    """The closed-form member, EASE or GF-CF (`training.closed_form`): fitted after the towers, kept if valid says so."""

    weights: list[float] = Field(default_factory=lambda: [0.0], description=(
        "Its weight relative to the towers' average score, tried on valid after the towers are trained; the best "
        "(by train.select_metric) is kept, 0 = no member. [0] = off (the default outside the built-in recipe)."))
    rank: int = Field(0, ge=0, description="Rank of its history and item tables (0 = model.dim).")
    half_lives: list[float] = Field(default_factory=lambda: [0.0], description=(
        "Recency half-lives (events) of the user's history sum tried on valid with every weight (0 = EASE's "
        "own unweighted sum)."))
    lambdas: list[float] = Field(default_factory=lambda: [10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0],
                                 description="EASE's L2 strengths, the best chosen on valid.")
    item_forms: list[Literal["unit", "lengths"]] = Field(default_factory=lambda: ["unit"], description=(
        "Item parts tried on valid with every weight: 'unit' rows (a cosine to the user's history sum), or "
        "'lengths' (the factored columns keep their relative lengths, so the member scores EASE's own low-rank "
        "score up to a per-user scale; `recsys.models.closed_form.item_part`)."))
    kinds: list[Literal["ease", "gf-cf"]] = Field(default_factory=lambda: ["ease"], description=(
        "Closed-form models tried on valid with every weight: 'ease' (a dense item-item inverse, up to "
        "`max_items`), 'gf-cf' (GF-CF's graph filter from a truncated SVD of the normalised interaction matrix, "
        "any catalogue size; `recsys.baselines.gfcf.factored_filter`)."))
    gfcf_rank: int = Field(1024, ge=2, description=(
        "Rank of GF-CF's linear filter as a two-tower member (Gowalla valid N@20: 256 .0989, 512 .1050, 1024 .1097; "
        "the exact filter .1169)."))
    extend_weights: int = Field(0, ge=0, description=(
        "When the largest of `weights` wins on valid, double it up to this many times while valid improves "
        "(the built-in recipe: 3); 0 = the grid as given."))
    select_metric: SelectMetric | None = Field(None, description=(
        "What valid chooses the member's lambda and candidate by (None = train.select_metric). 'mrr' counts every "
        "user's rank of the held-out item, not only top-k hits: on ML-100K's 943 valid users some 40 candidates "
        "sit within .002 of valid NDCG@10, a spread one user's hit makes, and MRR picked the better test candidate "
        "on three tower-seed sets of three (BENCHMARKS.md, \"ML-100K: what the closed-form member's choice is worth\")."))
    min_gain_se: float = Field(1.0, ge=0.0, description=(
        "Kept only if its best candidate's valid gain over the towers alone exceeds this many paired standard "
        "errors (per-user differences): the best of many candidates on a small valid split is often ahead by luck."))
    max_items: int = Field(10_000, ge=2, description=(
        "Larger catalogues get no EASE member (GF-CF still competes): EASE inverts a dense n_items x n_items matrix per lambda (11 s at 7,050 "
        "items on 2 cores, so ~30 s at 10,000 and ~2 min at 15,000, times 7 lambdas, ~3.5 GB at 15,000), which past "
        "10,000 items outgrows the recipe's 15-minute tower budget."))

    @model_validator(mode="after")
    def _sane(self) -> "EaseMemberConfig":
        if any(w < 0 for w in self.weights) or not self.weights:
            raise ValueError("ease.weights: at least one weight, none negative")
        if any(h < 0 for h in self.half_lives) or not self.half_lives:
            raise ValueError("ease.half_lives: at least one, none negative")
        if any(lam <= 0 for lam in self.lambdas) or not self.lambdas:
            raise ValueError("ease.lambdas: at least one, all positive")
        if not self.kinds:
            raise ValueError("ease.kinds: at least one of 'ease', 'gf-cf'")
        if not self.item_forms:
            raise ValueError("ease.item_forms: at least one of 'unit', 'lengths'")
        return self

    @property
    def enabled(self) -> bool:
        return any(w > 0 for w in self.weights)


class TrainConfig(_Strict):
    """Everything a training run depends on; its hash names the checkpoint it may resume from."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: OptimConfig = Field(default_factory=OptimConfig)
    ease: EaseMemberConfig = Field(default_factory=EaseMemberConfig)
    origin: str = Field("", description="Where this config came from (set by `load_config`; not hashed).")

    @model_validator(mode="after")
    def _member_overrides_fit(self) -> TrainConfig:
        """Check every entry's keys; keep only the entries of members this run trains, trailing empty ones
        dropped: `--set train.ensemble=1` on a mixed config is its member 0, and hashes like one."""
        overrides = self.train.member_overrides
        for option, entries in (("member_overrides", overrides), ("pilot", self.train.pilot)):
            for entry in entries:
                for key in entry:
                    section, _, name = key.partition(".")
                    if section not in ("model", "loss", "train") or not name or "." in name or key in _RUN_KEYS:
                        raise ValueError(f"train.{option}: {key!r} is not a model.*, loss.* or train.* key (data is "
                                         "shared by every member; ensemble, member_overrides, pilot and refit are the run's)")
        if len(self.train.pilot) == 1:
            raise ValueError("train.pilot: one candidate decides nothing; name two or more, or set its keys directly")
        for i, entry in enumerate(self.train.pilot):  # a bad candidate fails now, not after the first pilot trained
            _checked(f"train.pilot[{i}]", lambda: self.with_settings(entry).member(0))
        kept = list(overrides[:self.train.ensemble])
        while kept and not kept[-1]:
            kept.pop()
        self.train.member_overrides = kept
        for k, entry in enumerate(kept):  # a misspelt key or a bad value fails now, not after member 0 trained
            if entry:
                _checked(f"train.member_overrides[{k}]", lambda: self.member(k))
        return self

    def member(self, k: int) -> TrainConfig:
        """Ensemble member k: this config as a single run with seed `seed + k` (so member 0 is that run),
        plus the member's entry of `train.member_overrides` if it has one (validated like any config)."""
        overrides = self.train.member_overrides
        raw = self.model_dump()
        raw["train"].update(seed=self.train.seed + k, ensemble=1, member_overrides=[], pilot=[])
        raw["ease"] = EaseMemberConfig().model_dump()  # a tower's checkpoints do not depend on the closed-form member
        return TrainConfig.model_validate(_with_entry(raw, overrides[k] if k < len(overrides) else {}))

    def with_settings(self, entry: dict[str, Any]) -> TrainConfig:
        """This config with a pilot candidate's settings applied to every member (and no pilot left to run)."""
        raw = self.model_dump()
        raw["train"]["pilot"] = []
        return TrainConfig.model_validate(_with_entry(raw, entry))

    def fingerprint(self) -> str:
        """Hash of everything except knobs that do not change the numbers (eval cadence, threads) or only bound how
        far training goes (patience, epochs, the pilot's decision epoch), nor the refit, which trains beside the
        selection fit's checkpoints (RUN/refit/): a run resumes under a larger budget, or to refit."""
        body = self.model_dump()
        body.pop("origin")
        for key in ("threads", "eval_every", "patience", "epochs", "pilot_epochs", "refit"):
            body["train"].pop(key)
        if body["ease"] == EaseMemberConfig().model_dump():  # no closed-form member: hashes as before it existed
            body.pop("ease")
        for option in ("member_overrides", "pilot"):  # absent = before the option existed: same hash
            if not body["train"][option]:
                body["train"].pop(option)
        for section, defaults in _ADDED_LATER.items():  # options added after runs were trained: absent at default
            for key, default in defaults.items():
                if section in body and body[section][key] == default:  # (a default ease section is gone already)
                    body[section].pop(key)
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


_RUN_KEYS = ("train.ensemble", "train.member_overrides", "train.pilot", "train.pilot_epochs", "train.refit")  # the run's, not a member's


def _with_entry(raw: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """`raw` (a dumped config) with an entry's {"section.key": value} settings written in (in place)."""
    for key, value in entry.items():
        section, name = key.split(".")
        raw[section][name] = value
    return raw


def _checked(label: str, build: Any) -> None:
    """Build a config an entry derives (`build()`); a validation error is re-raised naming the entry and field."""
    try:
        build()
    except ValidationError as err:
        problem = err.errors()[0]
        raise ValueError(f"{label}: {'.'.join(map(str, problem['loc']))}: {problem['msg']}") from None

# Options added after runs were trained, per section, at their declared defaults: a config that leaves
# them there hashes as it did before they existed (self-attention shapes and the blocks' own item table;
# the item tower's content scale, gate and kNN feature space; the sequence step's view contrast and target horizon).
_ADDED_LATER = {
    section: {key: model.model_fields[key].get_default(call_default_factory=True) for key in keys}
    for section, model, keys in (
        ("model", ModelConfig, ("attention_heads", "attention_inner", "attention_weight_dropout", "attention_activation",
                                "attention_item_embedding", "content_scale", "content_gate_init", "item_knn_space",
                                "edge_dropout", "edge_dropout_mode", "layer0_weight", "graph_self_exponent",
                                "graph_neighbour_exponent", "graph_unit_layers")),
        ("loss", LossConfig, ("view_contrast_weight", "view_contrast_temperature", "target_horizon", "horizon_decay",
                              "reverse_weight", "softmax_group")),
        ("data", DataConfig, ("served_events",)),
        ("ease", EaseMemberConfig, ("extend_weights", "kinds", "gfcf_rank", "select_metric")))}


def default_config_path(dataset: str) -> Path:
    return CONFIG_DIR / f"{dataset}.toml"


def _parse_value(text: str) -> Any:
    """TOML literal if it parses (numbers, booleans, lists, quoted strings), else the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`section.key=value` strings (e.g. `train.lr=0.01`, `model.fusion=gated_attention`) into the raw dict."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = raw
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part} is not a section")
        node[parts[-1]] = _parse_value(value.strip())
    return raw


def beside_dataset_path(dataset: str) -> Path:
    """`<folder>.toml` next to a dataset folder (where `recsys tune` writes): RECSYS_DATA_DIR/x.toml for names."""
    from recsys.data.registry import REGISTERED, dataset_path

    folder = dataset_path(dataset) if dataset in REGISTERED or not Path(dataset).exists() else Path(dataset)
    folder = folder.resolve()
    return folder.parent / f"{folder.name}.toml"


def config_source(path: Path | None, dataset: str | None) -> tuple[Path | None, str]:
    """Which file a run's config comes from, most specific first, and a label saying why.

    1. `--config FILE`; 2. `<folder>.toml` beside the dataset folder (a tuned config travels with
    its data); 3. the repository's `configs/<dataset>.toml` (registered benchmarks); 4. none:
    the built-in robust recipe (`training.recipe`).
    """
    if path is not None:
        return Path(path), f"config file {path}"
    if dataset is None:
        return None, "built-in defaults"
    beside = beside_dataset_path(dataset)
    if beside.exists():
        return beside, f"dataset config {beside} (beside the dataset folder)"
    if default_config_path(dataset).exists():
        return default_config_path(dataset), f"dataset config {default_config_path(dataset)}"
    return None, "built-in robust default recipe"


def load_config(path: Path | None = None, dataset: str | None = None,
                   overrides: list[str] | None = None) -> TrainConfig:
    """File (see `config_source`) or the robust recipe for `dataset`, + overrides -> validated config.

    The result's `origin` says which, and is logged: a run on a new dataset must say that it
    used the built-in recipe, not silently train the plain defaults.
    Raises pydantic.ValidationError naming the bad key, FileNotFoundError for a missing file.
    """
    source, label = config_source(path, dataset)
    if source is not None:
        raw: dict[str, Any] = tomllib.loads(Path(source).read_text())
    elif dataset is not None:
        from recsys.data import load_dataset
        from training.recipe import data_shape, describe, robust_recipe

        shape = data_shape(load_dataset(dataset))
        raw = robust_recipe(shape)
        label = f"{label} ({describe(shape)})"
    else:
        raw = {}
    raw.pop("split_strategy", None)  # a run's config.toml repeats data.split there for the evaluator
    raw.pop("origin", None)
    if dataset is not None:
        raw.setdefault("data", {})["dataset"] = dataset
    if overrides:
        label += " + overrides " + " ".join(overrides)
    config = TrainConfig.model_validate(apply_overrides(raw, overrides or []))
    config.origin = label
    log.info("config: %s", label)
    return config

