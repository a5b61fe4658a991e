"""An env's identity in the store is its canonical full name (issue 21, items 1 and 14): the
parameters that differ from the constructor's defaults, in the constructor's order. Every verb
uses it, `--env-arg` included, so two worlds never share task ids, and a resume continues the
same policy in the same world only."""

from __future__ import annotations

import pytest

from core.agents.scripted import ExpertPolicy, RandomPolicy
from core.cli import main
from core.collect import collect
from core.envs import EnvSpec, UnknownEnvError, canonical_env_name, make_env
from core.errors import UserError

WORLD = "shop?n_products=200&n_categories=10"


def test_one_world_has_one_name() -> None:
    # parameter order, defaults spelled out, kwargs and number spellings all give one name
    for spelling, kwargs in (("shop?n_categories=10&n_products=200", {}),
                             ("shop?seed=0&n_products=200&n_categories=10&max_steps=10", {}),
                             ("shop?n_categories=10", {"n_products": 200}),
                             ("shop?n_products=200.0&n_categories=10", {}),
                             ("shop", {"n_categories": 10, "n_products": 200, "n_test": 200})):
        assert canonical_env_name(spelling, **kwargs) == WORLD, spelling
    assert canonical_env_name("shop?n_products=1000&seed=0") == "shop"
    assert make_env("shop?n_categories=10&n_products=200").name == WORLD
    assert make_env("shop", n_products=200, n_categories=10).name == WORLD
    # an env this installation does not know keeps its name (imported data of other envs)
    assert canonical_env_name("textcraft?b=1&a=2") == "textcraft?b=1&a=2"


def test_an_env_spec_is_parsed_once_and_builds_its_world() -> None:
    spec = EnvSpec.parse("tinyshop?seed=0", "dev")  # a short name, a default spelled out, a split
    assert (spec.base, spec.params, spec.name, spec.split) == (
        "shop", (("n_products", 200), ("n_categories", 10)), WORLD, "dev")
    assert spec.slug == "shop-n_products=200-n_categories=10"
    with make_env(spec) as env:
        assert env.name == WORLD and len(env.tasks("dev")) > 0
    assert spec.tasks(3) == [t.task_id for t in make_env(WORLD).tasks("dev")][:3]
    unknown = EnvSpec.parse("elsewhere?level=3")  # kept as given, not buildable here
    assert unknown.name == "elsewhere?level=3" and unknown.params == (("level", 3),)
    with pytest.raises(UnknownEnvError, match="unknown env 'elsewhere'"):
        unknown.make()


def test_bad_parameters_are_one_plain_line() -> None:
    for name, words in (("shop?n_widgets=3", ("n_widgets", "n_products")),
                        ("shop?n_products=lots", ("n_products", "integer", "lots")),
                        ("shop?n_products=2.5", ("n_products", "integer")),
                        ("shop?n_products", ("key=value",))):
        with pytest.raises(UnknownEnvError) as info:
            make_env(name)
        text = str(info.value)
        assert all(w in text for w in words), text
        assert "\n" not in text and "__init__" not in text and "keyword argument" not in text, text


def test_collect_with_env_args_stores_another_world_under_its_own_name(store, capsys) -> None:
    assert main(["collect", "--env", "shop", "--policy", "expert", "--task-ids", "train_0"]) == 0
    plain = store.tasks(env="shop").set_index("task_id").loc["train_0", "instruction"]
    assert main(["collect", "--env", "shop", "--policy", "expert", "--task-ids", "train_0",
                 "--env-arg", "n_categories=10", "--env-arg", "n_products=200"]) == 0
    tasks = store.tasks()
    assert sorted(tasks["env"]) == ["shop", WORLD]
    assert store.tasks(env="shop").set_index("task_id").loc["train_0", "instruction"] == plain
    world = store.tasks(env=WORLD).set_index("task_id").loc["train_0", "instruction"]
    assert world != plain
    assert sorted(store.trajectory_index()["env"]) == ["shop", WORLD]
    assert {r.env for r in store.runs().itertuples()} == {"shop", WORLD}
    # every verb names the world the same way, whatever the spelling
    capsys.readouterr()
    assert main(["replay", "--env", "shop?n_categories=10&n_products=200"]) == 0
    assert "replayed 1 trajectory: 0 mismatches" in capsys.readouterr().out
    assert main(["tree", "--env", "shop?n_products=200&seed=0&n_categories=10"]) == 0
    assert list(store.trees()["env"]) == [WORLD]
    with pytest.raises(SystemExit) as info:  # argparse: the usage line, then the error line
        main(["replay", "--env", "shop?n_widgets=2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and "has no parameter 'n_widgets'" in err[-1] and len(err) == 2


def test_resume_refuses_another_policy_or_world(store) -> None:
    tasks = [f"train_{i}" for i in range(3)]
    collect(store, "shop", ExpertPolicy("shop"), tasks[:1], run_id="run-r", progress=False)
    store.finish_run("run-r", "interrupted")
    before = store.counts()
    with pytest.raises(UserError, match="policy 'expert'.*--policy expert") as info:
        collect(store, "shop", RandomPolicy(), tasks, run_id="run-r", resume=True, progress=False)
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match=r"env 'shop'.*--env shop"):
        collect(store, WORLD, ExpertPolicy(WORLD), tasks, run_id="run-r", resume=True, progress=False)
    with pytest.raises(UserError, match=r"env 'shop'"):
        collect(store, "shop", ExpertPolicy("shop", n_products=200), tasks, run_id="run-r", resume=True,
                progress=False, env_kwargs={"n_products": 200})
    assert store.counts() == before
    assert store.runs().set_index("run_id").loc["run-r", "status"] == "interrupted"
    res = collect(store, "shop", ExpertPolicy("shop"), tasks, run_id="run-r", resume=True, progress=False)
    assert res.n_episodes == 2
