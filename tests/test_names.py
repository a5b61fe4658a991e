"""Short names on the command line (issue 25): the embedded world as `tinyshop`, models by their
method's label within the env's latest experiment, and hints that a shell takes as printed."""

from __future__ import annotations

import shlex

import pytest

from core.envs import canonical_env_name, make_env
from core.errors import UserError
from core.names import env_option, full_model_name, short_env_name, stored_world_hint
from core.train.data import parse_spec

TINY = "shop?n_products=200&n_categories=10"


def test_tinyshop_is_the_embedded_world():
    assert canonical_env_name("tinyshop") == TINY
    assert canonical_env_name("tinyshop?seed=3") == "shop?seed=3&n_products=200&n_categories=10"
    assert canonical_env_name("tinyshop?n_products=300") == "shop?n_products=300&n_categories=10"
    with make_env("tinyshop") as env:
        assert env.name == TINY
    assert parse_spec("expert:tinyshop?tasks=20").env == TINY
    assert parse_spec("pairs:tinyshop:step").env == TINY
    assert short_env_name(TINY) == "tinyshop" and short_env_name("shop") == "shop"


def test_env_option_is_quoted_for_a_shell():
    assert env_option(TINY) == "--env tinyshop"
    other = "shop?n_products=300&n_categories=10"
    assert shlex.split(env_option(other)) == ["--env", other]


def _result(store, exp, env, method, model, seed=0, k=4, created="2026-01-01"):
    return dict(experiment_id=exp, env=env, method=method, model=model, seed=seed, trajs_per_task=k,
                avg_reward=0.5, success_rate=0.5, n_examples=1, n_episodes=1, created_at=created)


def test_method_labels_name_the_latest_experiments_models(store, tmp_path):
    for name in ("tiny-sft-weak-s0", "tiny-sft-weak-s1", "old-sft-weak-s0", "big-treedpo-s0",
                 "shop-n_products=200-n_categories=10-weak"):
        (tmp_path / name).mkdir()
        store.register_model(name, str(tmp_path / name))
    store.add_results([
        _result(store, "exp-old", TINY, "SFT-weak", "old-sft-weak-s0", created="2026-01-01"),
        _result(store, "exp-new", TINY, "SFT-weak", "tiny-sft-weak-s1", seed=1, created="2026-01-02"),
        _result(store, "exp-new", TINY, "SFT-weak", "tiny-sft-weak-s0", seed=0, created="2026-01-02"),
        _result(store, "exp-new", TINY, "TreeDPO", "", created="2026-01-02"),  # no data: no model
        _result(store, "exp-big", "shop", "TreeDPO", "big-treedpo-s0", created="2026-01-03"),
    ])
    assert full_model_name(store, "sft-weak", TINY) == ("tiny-sft-weak-s0", "SFT-weak of experiment exp-new")
    assert full_model_name(store, "sft-weak-s1", TINY)[0] == "tiny-sft-weak-s1"
    assert full_model_name(store, "treedpo", TINY) is None  # that method had no data there
    assert full_model_name(store, "treedpo", None)[0] == "big-treedpo-s0"  # no env: the latest experiment
    assert full_model_name(store, "tinyshop-weak")[0] == "shop-n_products=200-n_categories=10-weak"
    # registered names, scripted policies, hub ids and unknown names are never rewritten
    assert full_model_name(store, "tiny-sft-weak-s0", TINY) is None
    assert full_model_name(store, "expert", TINY) is None
    assert full_model_name(store, "Qwen/Qwen2.5-0.5B-Instruct", TINY) is None
    assert full_model_name(store, "nothing", TINY) is None


def test_no_tree_names_the_world_the_store_holds(store):
    from core import stages
    from core.explore import load_node

    stages.demonstrations(store, TINY, ["train_0"])
    stages.grow_trees_stored(store, env=TINY)
    assert load_node(store, TINY, "train_0", 1)[2] == 1
    with pytest.raises(UserError) as err:
        load_node(store, "shop", "train_0", 2)
    text = str(err.value)
    assert "`w2stree tree --env shop --task train_0`" in text
    assert f"the store holds trees of {TINY} (--env tinyshop)" in text
    assert stored_world_hint(store, TINY) == ""
    other = "shop?n_products=300&n_categories=10"
    with pytest.raises(UserError, match=r"w2stree tree --env 'shop\?n_products=300&n_categories=10' --task"):
        load_node(store, other, "train_0", 2)
