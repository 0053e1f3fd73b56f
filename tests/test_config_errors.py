"""A typo'd config key gets the nearest valid key suggested, from `--set` and from a config file."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from training.config import TrainConfig, load_config
from training.config_errors import describe_config_error

REPO = Path(__file__).resolve().parents[1]


def test_typo_suggests_the_nearest_key():
    with pytest.raises(ValidationError) as err:
        load_config(None, "ml-100k", ["train.lrr=0.1", "model.dimm=32"])
    message = describe_config_error(err.value, TrainConfig)
    assert "train.lrr: unknown key; did you mean 'lr'?" in message
    assert "model.dimm: unknown key; did you mean 'dim'?" in message


def test_cli_prints_the_suggestion_not_a_pydantic_dump(tmp_path):
    done = subprocess.run([sys.executable, "-m", "commands.main", "train", "--dataset", "ml-100k", "--out", str(tmp_path / "r"),
                           "--set", "train.lrr=0.1"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, timeout=300)
    assert done.returncode == 2
    assert "did you mean 'lr'?" in done.stdout and "errors.pydantic.dev" not in done.stdout and "Traceback" not in done.stderr


def test_member_overrides_name_member_settings_only():
    """train.member_overrides: model / loss / train keys only; entries past the ensemble are not trained."""
    single = load_config(None, "ml-100k", ["train.ensemble=1", 'train.member_overrides=[{}, {"model.dim" = 8}]'])
    assert single.train.member_overrides == [] and single.model.dim != 8
    pair = load_config(None, "ml-100k", ["train.ensemble=2", 'train.member_overrides=[{}, {"model.dim" = 8}, {}]'])
    assert pair.train.member_overrides == [{}, {"model.dim": 8}]
    with pytest.raises(ValidationError, match="'data.feature_window' is not a model"):
        load_config(None, "ml-100k", ["train.ensemble=2", 'train.member_overrides=[{}, {"data.feature_window" = 8}]'])
    with pytest.raises(ValidationError, match=r"member_overrides\[1\]: model.user_poling: Extra inputs"):
        load_config(None, "ml-100k", ["train.ensemble=2", 'train.member_overrides=[{}, {"model.user_poling" = "mean"}]'])
    with pytest.raises(ValidationError, match=r"member_overrides\[0\]: model.user_pooling: Input should be"):
        load_config(None, "ml-100k", ["train.ensemble=2", 'train.member_overrides=[{"model.user_pooling" = "max"}]'])
    with pytest.raises(ValidationError, match="'train.ensemble' is not"):
        load_config(None, "ml-100k", ["train.ensemble=2", 'train.member_overrides=[{"train.ensemble" = 3}]'])


def test_no_member_overrides_keeps_the_fingerprint():
    """Configs written before the option existed hash as before (their checkpoints stay resumable)."""
    plain = load_config(None, "ml-100k", ["train.ensemble=2", "train.member_overrides=[]"])
    assert plain.fingerprint() == load_config(None, "ml-100k", ["train.ensemble=2", "train.member_overrides=[{}, {}]"]).fingerprint()
    mixed = load_config(None, "ml-100k", ["train.ensemble=2", 'train.member_overrides=[{}, {"model.dim" = 8}]'])
    assert mixed.fingerprint() != plain.fingerprint()


def test_a_pilot_names_two_or_more_valid_candidates_and_hashes_as_before_when_empty():
    """train.pilot: each candidate is checked like a member's settings; one candidate alone is refused."""
    plain = load_config(None, "ml-100k", ["train.ensemble=2"])
    assert load_config(None, "ml-100k", ["train.ensemble=2", "train.pilot=[]"]).fingerprint() == plain.fingerprint()
    pilot = load_config(None, "ml-100k", ["train.ensemble=2", 'train.pilot=[{}, {"loss.logq_correction" = 1.0}]'])
    assert pilot.fingerprint() != plain.fingerprint()
    settled = pilot.with_settings({"loss.logq_correction": 1.0})
    assert settled.loss.logq_correction == 1.0 and settled.train.pilot == [] and settled.train.ensemble == 2
    assert pilot.member(0).train.pilot == [] and pilot.member(0).fingerprint() == plain.member(0).fingerprint()
    with pytest.raises(ValidationError, match="one candidate decides nothing"):
        load_config(None, "ml-100k", ['train.pilot=[{"loss.logq_correction" = 1.0}]'])
    with pytest.raises(ValidationError, match=r"train.pilot: 'data.split' is not a model"):
        load_config(None, "ml-100k", ['train.pilot=[{}, {"data.split" = "predefined"}]'])
    with pytest.raises(ValidationError, match=r"train.pilot: 'train.pilot' is not"):
        load_config(None, "ml-100k", ['train.pilot=[{}, {"train.pilot" = []}]'])
    with pytest.raises(ValidationError, match=r"pilot\[1\]: loss.logq_correction: Input should be greater"):
        load_config(None, "ml-100k", ['train.pilot=[{}, {"loss.logq_correction" = -1.0}]'])


def test_the_attention_options_at_their_defaults_keep_the_fingerprint():
    """Self-attention options added after runs were trained hash as before at their defaults."""
    plain = load_config(None, "ml-100k")
    same = load_config(None, "ml-100k", ["model.attention_heads=1", "model.attention_inner=0",
                                         'model.attention_activation="relu"'])
    assert same.fingerprint() == plain.fingerprint()
    body = plain.model_dump()
    body.pop("origin")
    for key in ("threads", "eval_every", "patience", "epochs", "pilot_epochs", "refit"):  # budgets, not numbers; the refit
        # trains beside the selection fit's checkpoints
        body["train"].pop(key)
    for key in ("attention_heads", "attention_inner", "attention_weight_dropout", "attention_activation",
                "attention_item_embedding", "content_scale", "content_gate_init", "item_knn_space", "edge_dropout",
                "edge_dropout_mode", "layer0_weight", "graph_self_exponent", "graph_neighbour_exponent",
                "graph_unit_layers"):
        body["model"].pop(key)
    for key in ("view_contrast_weight", "view_contrast_temperature", "target_horizon", "horizon_decay",
                "reverse_weight", "softmax_group"):  # loss options added later
        body["loss"].pop(key)
    body["data"].pop("served_events")  # a data option added later
    for key in ("extend_weights", "kinds", "gfcf_rank"):  # closed-form member options added later
        body["ease"].pop(key)
    body["train"].pop("pilot")  # no pilot: hashed as before the option existed
    import hashlib
    import json
    assert plain.fingerprint() == hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    assert load_config(None, "ml-100k", ["model.attention_heads=2"]).fingerprint() != plain.fingerprint()
    assert load_config(None, "ml-100k", ["model.attention_item_embedding=true"]).fingerprint() != plain.fingerprint()
    assert load_config(None, "ml-100k", ["loss.target_horizon=3"]).fingerprint() != plain.fingerprint()
    assert load_config(None, "ml-100k", ["data.served_events=true"]).fingerprint() != plain.fingerprint()
    assert load_config(None, "ml-100k", ['ease.kinds=["ease", "gf-cf"]']).fingerprint() != plain.fingerprint()


def test_the_reverse_softmax_changes_the_fingerprint_and_needs_the_sampled_softmax():
    """`loss.reverse_weight` at 0 hashes as before it existed; on, it is another tower; it refuses a loss it is
    no direction of."""
    sparse = load_config(None, "tiktok", ["loss.reverse_weight=0"])
    assert sparse.fingerprint() != load_config(None, "tiktok").fingerprint()  # configs/tiktok.toml turns it on
    assert load_config(None, "ml-100k").loss.reverse_weight == 0  # the exact softmax there: nothing to reverse
    with pytest.raises(ValidationError, match="reverse_weight"):
        load_config(None, "ml-100k", ["loss.kind=\"full_softmax\"", "loss.reverse_weight=0.3"])


def test_the_content_scale_options_at_their_defaults_keep_the_fingerprint():
    """Item-tower content options added after runs were trained hash as before at their defaults,
    and change it otherwise."""
    plain = load_config(None, "tiktok")
    same = load_config(None, "tiktok", ['model.content_scale="raw"', "model.content_gate_init=0.0",
                                        'model.item_knn_space="raw"'])
    assert same.fingerprint() == plain.fingerprint()
    assert load_config(None, "tiktok", ['model.content_scale="id"']).fingerprint() != plain.fingerprint()
    assert load_config(None, "tiktok", ["model.content_gate_init=0.5"]).fingerprint() != plain.fingerprint()
    assert load_config(None, "tiktok", ['model.item_knn_space="standardised"']).fingerprint() != plain.fingerprint()


def test_a_cross_key_config_error_is_one_line_without_the_whole_config():
    """A check across keys (a model validator) names its keys itself: no dump of the config after it."""
    with pytest.raises(ValidationError) as caught:
        load_config(None, "ml-100k", ["train.ensemble=2", 'train.member_overrides=[{}, {"model.user_poling" = "mean"}]'])
    assert describe_config_error(caught.value, TrainConfig) == \
        "train.member_overrides[1]: model.user_poling: Extra inputs are not permitted"


def test_softmax_groups_change_the_fingerprint_and_need_the_in_batch_softmax():
    plain = load_config(None, "tiktok")
    assert load_config(None, "tiktok", ["loss.softmax_group=0"]).fingerprint() == plain.fingerprint()
    assert load_config(None, "tiktok", ["loss.softmax_group=512"]).fingerprint() != plain.fingerprint()
    with pytest.raises(ValidationError, match="softmax_group"):
        load_config(None, "ml-100k", ["loss.kind=\"full_softmax\"", "loss.softmax_group=512"])
