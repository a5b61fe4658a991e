"""The built-in shop: reward, pages, paging, invalid actions, step limit, determinism, expert."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from core.agents.prompt import env_prefix
from core.envs import UnknownEnvError, make_env
from core.envs.shop import SEARCH_TEMPLATE, ShopEnv
from core.envs.shop_catalog import Goal, Product, generate_catalog, reward
from core.errors import UserError


@pytest.fixture(scope="module")
def env() -> ShopEnv:
    return make_env("shop")


def _product(**kw) -> Product:
    base = dict(asin="B0TEST0001", title="Acme Lipstick", category="beauty & personal care",
                product_type="lipstick", breadcrumb="beauty & personal care › makeup › lipstick",
                attributes=["long lasting", "matte finish", "vegan"],
                options={"color": ["red", "black"], "size": ["small", "large"]}, price=30.0,
                rating="4.0", description="", features=[], reviews=[])
    base.update(kw)
    return Product(**base)


GOAL = Goal(asin="B0TEST0001", product_type="lipstick", category="beauty & personal care",
            attributes=["long lasting", "matte finish"], options={"color": "black", "size": "large"},
            price_upper=40.0)


def test_reward_hand_computed_cases() -> None:
    full = {"color": "black", "size": "large"}
    assert reward(_product(), full, GOAL) == 1.0
    # one option not selected: (2 attributes + 1 option + price) / (2 + 2 + 1)
    assert reward(_product(), {"color": "black"}, GOAL) == pytest.approx(4 / 5)
    # a wrong option value counts like a missing one
    assert reward(_product(), {"color": "red", "size": "large"}, GOAL) == pytest.approx(4 / 5)
    # over the price limit
    assert reward(_product(price=45.0), full, GOAL) == pytest.approx(4 / 5)
    # one attribute missing and over the price: (1 + 2 + 0) / 5
    assert reward(_product(attributes=["matte finish"], price=99.0), full, GOAL) == pytest.approx(3 / 5)
    # wrong type, same category: r_type 0.5
    assert reward(_product(product_type="deodorant"), full, GOAL) == pytest.approx(0.5)
    # other category, no shared head noun: r_type 0
    assert reward(_product(product_type="dog collar", category="pet supplies"), full, GOAL) == 0.0
    # other category but the same head noun ("lipstick"): r_type 0.1
    assert reward(_product(product_type="toy lipstick", category="toys & games"), full, GOAL) == \
        pytest.approx(0.1)


def test_expert_episode_and_missing_option_in_the_env(env: ShopEnv) -> None:
    task = next(t for t in env.tasks("test") if env.goal(t.task_id).options)
    goal = env.goal(task.task_id)
    plan = [s.action for s in env.expert(task.task_id)]
    obs, instruction = env.reset(task.task_id)
    assert instruction == task.instruction and instruction in obs and obs.endswith("[SEP] Search")
    assert "price lower than" in instruction
    for a in plan:
        res = env.step(a)
    assert (res.reward, res.done, res.info["success"]) == (1.0, True, True)
    # the expert clicks the product id exactly as the results page shows it
    env.reset(task.task_id)
    page = env.step(plan[0]).observation
    asin = plan[1][len("click["):-1]
    assert asin.startswith("B0") and f"[SEP] {asin} [SEP]" in page
    # the same episode without the first option click
    first_option = f"click[{next(iter(goal.options.values()))}]"
    env.reset(task.task_id)
    for a in plan:
        if a != first_option:
            res = env.step(a)
    n = len(goal.attributes) + len(goal.options) + 1
    assert res.done and res.reward == pytest.approx((n - 1) / n) and res.info["success"] is False


def test_pages_and_paging() -> None:
    env = ShopEnv(max_steps=30)  # a long walk through the pages, beyond the default limit
    env.reset("train_0")
    assert env.valid_actions() == [SEARCH_TEMPLATE]
    page1 = env.step("search[black]").observation
    assert page1.startswith("Back to Search [SEP] Page 1 (Total results: 50) [SEP] Next >")
    assert "< Prev" not in page1
    acts = env.valid_actions()
    asins1 = [a for a in acts if a.startswith("click[b0")]
    assert len(asins1) == 10 and acts[:2] == ["click[back to search]", "click[next >]"]
    page2 = env.step("click[Next >]").observation  # clicks match case-insensitively
    assert "Page 2 (Total results: 50) [SEP] < Prev [SEP] Next >" in page2
    asins2 = [a for a in env.valid_actions() if a.startswith("click[b0")]
    assert len(asins2) == 10 and not set(asins1) & set(asins2)
    assert env.step("click[< prev]").observation == page1
    for _ in range(4):
        last = env.step("click[next >]").observation
    assert "Page 5 (Total results: 50)" in last and "Next >" not in last
    res = env.step("click[next >]")
    assert res.info["invalid"] and "not clickable" in res.observation
    # item page, a detail sub-page, and back
    assert "not clickable" in env.step(asins2[0]).observation  # a page-2 product, seen from page 5
    env.step("click[back to search]")
    env.step("search[black]")
    item = env.step(asins1[0]).observation
    assert item.startswith("Back to Search [SEP] < Prev") and item.endswith(
        "Description [SEP] Features [SEP] Reviews [SEP] Buy Now")
    assert "Price: $" in item
    assert env.step("click[features]").observation.startswith("Back to Search [SEP] < Prev [SEP] ")
    assert env.step("click[< prev]").observation == item
    assert env.step("click[< prev]").observation == page1


def test_invalid_and_malformed_actions_are_counted_no_ops() -> None:
    env = ShopEnv(max_steps=6)
    first, _ = env.reset("train_3")
    for bad in ("buy the thing", "click[buy now]", "search[]", "search[ !! ]"):
        res = env.step(bad)
        assert res.info["invalid"] and res.observation.startswith("Invalid action") and not res.done
        assert res.observation.endswith(" [SEP] " + first)  # the unchanged page is shown again
    page = env.step("search[red]").observation
    res = env.step("search[blue]")  # no search box on the results page
    assert res.info["invalid"] and "no search box" in res.observation and res.observation.endswith(page)
    # the invalid step changed nothing, but it used up the last step: 6 steps, no purchase
    assert res.done and res.reward == 0.0 and res.info["success"] is False
    assert env.step("click[back to search]").info["invalid"]  # the episode is over
    env.reset("train_3")
    env.step("search[red]")
    assert env.step("click[nothing here]").info["invalid"]
    assert env.step("click[back to search]").observation == first
    assert env.step("search[red]").observation == page


def test_step_limit_ends_with_zero_reward(env: ShopEnv) -> None:
    assert env.max_steps("train_0") == 10  # the default: as the paper's release runs WebShop
    limited = ShopEnv(max_steps=3)
    assert limited.max_steps("train_0") == 3
    plan = [s.action for s in env.expert("train_0")]
    limited.reset("train_0")
    results = [limited.step(a) for a in plan[:3]]
    assert [r.done for r in results] == [False, False, True]
    assert results[-1].reward == 0.0


def test_unknown_task_split_and_bad_settings(env: ShopEnv) -> None:
    with pytest.raises(UnknownEnvError, match="train_0..train_4999, dev_0..dev_199, test_0..test_199"):
        env.reset("train_5000")
    with pytest.raises(UnknownEnvError, match="splits: train, dev, test"):
        env.tasks("valid")
    with pytest.raises(UserError, match="n_categories"):
        ShopEnv(n_categories=3)
    with pytest.raises(UserError, match="n_dev=0"):
        ShopEnv(n_dev=0)
    assert len(env.tasks("train")) == 5000 and len(env.tasks("test")) == 200 and len(env.tasks("dev")) == 200


# Instructions of the original plan (before the dev split existed): stored experiments name these
# tasks, so adding dev must leave them exactly as they were.
PINNED = {
    "shop": {
        "train_0": "i need a dog collar that is waterproof, padded and reflective in orange color and in size "
                   "small, and price lower than 40.00 dollars",
        "train_7": "find me a jigsaw puzzle that is 1000 pieces, thick pieces and for adults in ocean color, and "
                   "price lower than 40.00 dollars",
        "test_0": "i want to buy a non gmo, low sugar and vegan protein bars with peanut butter flavor and in size "
                  "12 count, and price lower than 70.00 dollars",
    },
    "shop?n_products=200&n_categories=10": {
        "train_0": "i am searching for a led light bulb that is soft white, long lasting and daylight in size 40w "
                   "equivalent and in 2700k color, and price lower than 60.00 dollars",
        "test_5": "find me a hot sauce that is extra hot and small batch with garlic flavor and in size 5 fl oz, "
                  "and price lower than 40.00 dollars",
    },
}


@pytest.mark.parametrize("name", list(PINNED))
def test_dev_split_is_disjoint_and_leaves_train_and_test_goals_unchanged(name: str) -> None:
    from core.envs.base import select_tasks

    env = make_env(name)
    ids = {s: [t.task_id for t in env.tasks(s)] for s in ("train", "dev", "test")}
    assert ids["dev"] == [f"dev_{i}" for i in range(200)]
    assert not set(ids["dev"]) & (set(ids["train"]) | set(ids["test"]))
    assert {t.split for t in env.tasks("dev")} == {"dev"}
    for tid, text in PINNED[name].items():
        assert env.goal(tid).instruction == text
    # dev targets come from the train products (a 200-product shop's test tasks use every
    # product, so there train shares products with test; the default shop's does not)
    targets = env._tasks.targets
    products = {s: {targets[t][1] for t in ids[s]} for s in ids}
    assert products["dev"] <= products["train"]
    if name == "shop":
        assert not products["dev"] & products["test"]
    assert select_tasks(env, "dev", tasks=3) == ["dev_0", "dev_1", "dev_2"]
    assert env.reset("dev_0")[1] == env.goal("dev_0").instruction


def test_n_dev_sizes_the_dev_block_only() -> None:
    small, big = ShopEnv(n_dev=10), ShopEnv(n_dev=300)
    assert len(small.tasks("dev")) == 10 and big.tasks("dev")[:10] == small.tasks("dev")
    assert small.tasks("train") == big.tasks("train") and small.tasks("test") == big.tasks("test")


def test_more_train_tasks_keep_the_earlier_ones_and_the_test_split():
    small, big = ShopEnv(n_train=1000), ShopEnv(n_train=5000)
    assert small.tasks("test") == big.tasks("test")
    assert big.tasks("train")[:1000] == small.tasks("train")
    assert [small.goal(t.task_id) for t in small.tasks("train")[:50]] == [big.goal(t.task_id) for t in
                                                                         big.tasks("train")[:50]]


def test_env_named_with_parameters_is_that_env_under_its_full_name():
    from core.envs import make_env

    env = make_env("shop?n_products=200&n_categories=10")
    assert (env.name, env.n_products, env.n_categories) == ("shop?n_products=200&n_categories=10", 200, 10)
    assert {t.env for t in env.tasks("test")} == {env.name}
    assert env.tasks("test")[0].instruction == ShopEnv(n_products=200, n_categories=10).tasks("test")[0].instruction
    with pytest.raises(UnknownEnvError, match="n_widgets"):
        make_env("shop?n_widgets=3")
    with pytest.raises(UnknownEnvError, match="key=value"):
        make_env("shop?n_products")


def test_expert_search_is_the_instructions_content_words_in_order(env: ShopEnv) -> None:
    for task in env.tasks("train")[:30]:
        query = env.expert(task.task_id)[0].action[len("search["):-1]
        text = task.instruction
        positions = [text.find(w) for w in env.goal(task.task_id).query]
        assert -1 not in positions and positions == sorted(positions), (query, text)


def _fingerprint_code(seed: int) -> str:
    return (
        "import json; from core.envs.shop import ShopEnv; "
        f"e = ShopEnv(seed={seed}, n_products=300, n_train=50, n_test=20); "
        "print(json.dumps([[p.asin, p.title, p.price, p.attributes, p.options] for p in e.catalog.products[:40]]"
        " + [t.instruction for t in e.tasks('train') + e.tasks('test')]"
        " + [e.catalog.search('black large') , [s.action for s in e.expert('test_3')]]))"
    )


def test_determinism_across_processes_and_seeds(capsys) -> None:
    code = _fingerprint_code(5)
    exec(code, {})  # our own snippet, in this process
    here = capsys.readouterr().out
    outs = []
    for hashseed in ("1", "2"):  # set order must not leak into the catalogue
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": hashseed})
        outs.append(run.stdout)
    assert outs[0] == outs[1] == here
    a, b = generate_catalog(5, 200, 12), generate_catalog(6, 200, 12)
    assert [p.title for p in a] != [p.title for p in b]
    assert ShopEnv(seed=5, n_products=300, n_train=50, n_test=20).tasks("test")[0].instruction != \
        ShopEnv(seed=6, n_products=300, n_train=50, n_test=20).tasks("test")[0].instruction


def test_catalogue_shape(env: ShopEnv) -> None:
    products = env.catalog.products
    assert len(products) == 1000 and len({p.category for p in products}) == 12
    assert len({p.asin for p in products}) == len({p.title for p in products}) == 1000
    assert all(p.options and p.features and p.reviews and p.description for p in products)


def test_expert_reaches_one_on_a_sample_of_tasks(env: ShopEnv) -> None:
    tasks = env.tasks("test") + env.tasks("train")[::10]
    assert len(tasks) >= 200
    for task in tasks:
        env.reset(task.task_id)
        plan = env.expert(task.task_id)
        assert 3 <= len(plan) <= env.max_steps()
        for s in plan:
            res = env.step(s.action)
            assert not res.info["invalid"], (task.task_id, s.action, res.observation)
        assert res.done and res.reward == 1.0, task.task_id


def test_one_shot_is_an_expert_episode_outside_the_splits(env: ShopEnv) -> None:
    message, steps = ShopEnv.one_shot()
    every = [t for s in env.splits() for t in env.tasks(s)]
    assert "demo_0" not in {t.task_id for t in every}
    assert message not in {t.instruction for t in every}
    assert message.startswith(env.goal("demo_0").instruction) and "Observation: WebShop [SEP]" in message
    assert steps[0].action.startswith("search[") and steps[-1].action == "click[buy now]"
    assert steps[-1].reward == 1.0 and all(s.thought for s in steps)
    prefix = env_prefix("shop")
    assert prefix[0]["content"] == ShopEnv.system_prompt and prefix[2]["content"] == message
