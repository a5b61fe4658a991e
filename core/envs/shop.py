"""`shop`: the built-in WebShop-style environment (pure Python, deterministic from a seed).

Pages and actions follow WebShop's text environment:

* search page — `search[keywords]`;
* results page — 10 products per page out of the top 50 BM25 hits, `click[next >]`,
  `click[< prev]`, `click[back to search]`, `click[<asin>]`;
* item page — option values (`click[black]`), `click[description]` / `click[features]` /
  `click[reviews]` (each a sub-page with `< prev`), `click[buy now]`, `click[< prev]` (back to
  the results), `click[back to search]`.

Observations list the page's text with `[SEP]` between elements, as WebShop's text mode does;
clickables are shown as WebShop shows them (`Buy Now`, `Next >`, `B0ABCDEFGH`) and matched
case-insensitively. One deliberate difference: the instruction is shown on the search page
only (the first observation, which opens the task message), not repeated on every page, to keep
prompts short for small models. Clicking an option answers `You have clicked <value>.` as
WebShop's text env does.

Splits: `train` (`train_0..`, the tasks that are demonstrated and explored), `dev`
(`dev_0..dev_{n_dev-1}`, for every tuning choice: targets drawn from the train products, but the
ids are not train ids, so no dev task is ever demonstrated or explored) and `test` (`test_0..`,
distinct products of their own, evaluated once by the final run).

`buy now` ends the episode with WebShop's reward (core.envs.shop_catalog.reward); success is
reward 1. When the step limit (10 by default, as the paper's release runs WebShop) is hit first,
the episode ends with reward 0. Search is BM25
(`rank_bm25.BM25Okapi`) over title, breadcrumb, attributes and option values; the index and
catalogue are built once per (seed, size) and shared by all env instances in the process.

`tinyshop` is the short name of `shop?n_products=200&n_categories=10`, the smaller world the
pipeline's tiny and quick scales (and so `w2stree up`) play with the from-scratch models.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re
from dataclasses import dataclass, field

import numpy as np

from core.agents.prompt import task_message
from core.envs.base import Env, ExpertStep, StepResult, UnknownEnvError, register_alias, register_env
from core.envs.shop_catalog import (
    MAX_CATEGORIES,
    Goal,
    Product,
    generate_catalog,
    make_goal,
    reward,
    satisfies,
)
from core.errors import UserError
from core.trajectory import Step, Task

RESULTS_PER_PAGE = 10
MAX_RESULTS = 50  # WebShop's search returns the top 50
SEARCH_TEMPLATE = "search[...]"
DEMO_TASK = "demo_0"
_ACTION_RE = re.compile(r"^\s*(search|click)\s*\[(.*)\]\s*$", re.IGNORECASE | re.DOTALL)
_TOKEN_RE = re.compile(r"[a-z0-9]+")
_BUTTONS = {"back to search": "Back to Search", "< prev": "< Prev", "next >": "Next >",
            "description": "Description", "features": "Features", "reviews": "Reviews",
            "buy now": "Buy Now"}
_DETAILS = ("description", "features", "reviews")


def tokenize(text: str) -> list[str]:
    """Lower-case alphanumeric tokens (the search engine's analyzer)."""
    return _TOKEN_RE.findall(text.lower())


class Catalog:
    """Products, the BM25 index over them, and the task sets; shared per (seed, size)."""

    def __init__(self, seed: int, n_products: int, n_categories: int) -> None:
        from rank_bm25 import BM25Okapi

        self.seed = seed
        self.products: list[Product] = generate_catalog(seed, n_products, n_categories)
        self.by_asin = {p.asin.lower(): i for i, p in enumerate(self.products)}
        docs = [tokenize(p.search_text()) for p in self.products]
        self.bm25 = BM25Okapi(docs)
        # which products hold each token: BM25 only needs to score those (the rest score 0)
        self._postings: dict[str, set[int]] = {}
        for i, doc in enumerate(docs):
            for tok in doc:
                self._postings.setdefault(tok, set()).add(i)
        self._search_cache: dict[tuple[str, ...], list[int]] = {}

    def search(self, query: str) -> list[int]:
        """Indices of the top-50 products for `query` (BM25 score > 0, ties by catalogue order)."""
        key = tuple(tokenize(query))
        hit = self._search_cache.get(key)
        if hit is None:
            cand = np.array(sorted(set().union(*(self._postings.get(t, ()) for t in key))), dtype=int)
            scores = np.asarray(self.bm25.get_batch_scores(list(key), cand)) if len(cand) else np.zeros(0)
            order = np.argsort(-scores, kind="stable")[:MAX_RESULTS]
            hit = [int(cand[i]) for i in order if scores[i] > 0]
            if len(self._search_cache) > 50_000:  # bounded: random policies invent many queries
                self._search_cache.clear()
            self._search_cache[key] = hit
        return hit


@functools.cache
def _catalog(seed: int, n_products: int, n_categories: int) -> Catalog:
    return Catalog(seed, n_products, n_categories)


@dataclass
class _TaskSet:
    """The tasks of a catalogue. A goal depends only on its task id and target product (its own
    seeded Random), so goals are made on first use: an env that plays one task (explore, play,
    replay) does not pay for the 5,000 others."""

    seed: int
    products: list[Product]
    targets: dict[str, tuple[str, int]]  # task id -> (split, target product index)
    splits: dict[str, list[str]]
    goals: dict[str, Goal] = field(default_factory=dict)

    def goal(self, task_id: str) -> Goal | None:
        """The goal of a task (None for an unknown id)."""
        goal = self.goals.get(task_id)
        if goal is None and task_id in self.targets:
            goal = self.goals[task_id] = make_goal(self.products[self.targets[task_id][1]],
                                                   random.Random(f"shop-goal/{self.seed}/{task_id}"))
        return goal

    def task(self, task_id: str) -> Task:
        return Task(env="shop", task_id=task_id, split=self.targets[task_id][0],
                    instruction=self.goal(task_id).instruction)


@functools.cache
def _task_set(seed: int, n_products: int, n_categories: int, n_train: int, n_test: int,
              n_dev: int = 200) -> _TaskSet:
    """Test tasks target distinct products; train tasks target the others (cycling when there
    are more train tasks than products left); dev tasks draw from the train products, continuing
    the cycle after the train tasks. The demo task (one-shot example) is in no split.

    The dev block is planned after train, and a goal is seeded by its task id, so adding it (or
    changing `n_dev`) leaves every train and test task's target and goal as they were."""
    cat = _catalog(seed, n_products, n_categories)
    order = list(range(len(cat.products)))
    random.Random(f"shop-tasks/{seed}").shuffle(order)
    test_targets = order[:n_test]
    rest = order[n_test:] or order
    plan = [("test", i, test_targets[i % len(test_targets)]) for i in range(n_test)]
    plan += [("train", i, rest[i % len(rest)]) for i in range(n_train)]
    plan += [("dev", i, rest[(n_train + i) % len(rest)]) for i in range(n_dev)]
    plan.append(("demo", 0, order[-1]))
    targets, splits = {}, {"train": [], "dev": [], "test": [], "demo": []}
    for split, i, target in plan:
        tid = f"{split}_{i}"
        targets[tid] = (split, target)
        splits[split].append(tid)
    return _TaskSet(seed, cat.products, targets, splits)


@dataclass
class _State:
    goal: Goal
    page: str = "search"  # search / results / item / detail
    results: list[int] = field(default_factory=list)
    result_page: int = 0
    product: int = -1
    detail: str = ""
    selected: dict[str, str] = field(default_factory=dict)
    steps: int = 0
    done: bool = False


#: The world of the embedded default (`w2stree up`): 200 products in 10 categories.
TINY_WORLD = "n_products=200&n_categories=10"
register_alias("tinyshop", f"shop?{TINY_WORLD}")


@register_env("shop")
class ShopEnv(Env):
    """WebShop-style shop over a generated catalogue (see the module docstring)."""

    name = "shop"
    has_oracle = True  # `replan` plans from any page (core.oracle: true values of tree nodes)
    system_prompt = (
        "You are web shopping. I will give you an instruction about what to buy. Every round I "
        "give you an observation of the page, with its elements separated by [SEP]; you answer "
        "with one thought and one action.\n"
        "The actions are:\n"
        "search[keywords] (only on the search page)\n"
        "click[value] (value is a clickable element of the page: a button such as Buy Now or "
        "Next >, a product id, or an option value)\n"
        "An invalid action does nothing. Choose search keywords carefully; check the product's "
        "options and price before you buy.\n"
        "Answer in the format:\nThought: I think ...\nAction: click[something]"
    )

    def __init__(self, seed: int = 0, n_products: int = 1000, n_categories: int = 12,
                 n_train: int = 5000, n_test: int = 200, max_steps: int = 10, n_dev: int = 200) -> None:
        if not 10 <= n_categories <= MAX_CATEGORIES:
            raise UserError(f"shop: n_categories must be between 10 and {MAX_CATEGORIES}, got {n_categories}")
        if n_products < n_categories or min(n_train, n_dev, n_test, max_steps) < 1:
            raise UserError(
                f"shop: need n_products >= n_categories and positive n_train, n_dev, n_test, max_steps "
                f"(got n_products={n_products}, n_train={n_train}, n_dev={n_dev}, n_test={n_test}, "
                f"max_steps={max_steps})"
            )
        self.seed, self.n_products, self.n_categories = seed, n_products, n_categories
        self.step_limit = max_steps
        self.catalog = _catalog(seed, n_products, n_categories)
        self._tasks = _task_set(seed, n_products, n_categories, n_train, n_test, n_dev)
        self._state: _State | None = None
        self._instruction = ""

    # -- tasks -------------------------------------------------------------------------------
    def splits(self) -> list[str]:
        return ["train", "dev", "test"]

    def tasks(self, split: str = "train") -> list[Task]:
        if split not in self.splits():  # the demo task (one-shot example) is in no split
            raise UnknownEnvError(f"shop has no split {split!r}; splits: {', '.join(self.splits())}")
        tasks = [self._tasks.task(t) for t in self._tasks.splits[split]]
        # tasks are cached per catalogue; one named with parameters is stored under its full name
        return tasks if self.name == "shop" else [dataclasses.replace(t, env=self.name) for t in tasks]

    def goal(self, task_id: str) -> Goal:
        """The goal behind a task (its target product, attributes, options, price limit)."""
        goal = self._tasks.goal(task_id)
        if goal is None:
            ranges = ", ".join(f"{s}_0..{s}_{len(self._tasks.splits[s]) - 1}" for s in self.splits())
            raise UnknownEnvError(f"shop has no task {task_id!r}; tasks are {ranges}")
        return goal

    def max_steps(self, task_id: str | None = None) -> int:
        return self.step_limit

    # -- episode -----------------------------------------------------------------------------
    def reset(self, task_id: str) -> tuple[str, str]:
        goal = self.goal(task_id)
        self._state = _State(goal=goal)
        self._instruction = goal.instruction
        return self._render(), goal.instruction

    def step(self, action: str) -> StepResult:
        st = self._state
        if st is None:
            return StepResult("Invalid action: no episode is running; call reset first.", 0.0, True,
                              {"invalid": True})
        if st.done:
            return StepResult("Invalid action: the episode is over.", 0.0, True, {"invalid": True})
        st.steps += 1
        obs, rew, invalid = self._apply(st, action)
        if invalid:  # the page stays as it was (as in WebShop), and the agent sees it again
            obs = f"{obs} [SEP] {self._render()}"
        if not st.done and st.steps >= self.step_limit:
            st.done = True  # out of steps without buying: reward 0
        info: dict = {"invalid": invalid, "page": st.page}
        if st.done:
            info["success"] = rew >= 1.0
        return StepResult(obs, rew, st.done, info)

    def _apply(self, st: _State, action: str) -> tuple[str, float, bool]:
        """Play one action: (observation, reward, invalid)."""
        m = _ACTION_RE.match(action)
        if m is None:
            return ("Invalid action: actions look like search[keywords] or click[value].", 0.0, True)
        verb, arg = m.group(1).lower(), " ".join(m.group(2).lower().split())
        if verb == "search":
            if st.page != "search":
                return ("Invalid action: there is no search box on this page; click[back to search] first.",
                        0.0, True)
            if not tokenize(arg):
                return "Invalid action: search needs keywords, like search[red lipstick].", 0.0, True
            st.results, st.result_page, st.page = self.catalog.search(arg), 0, "results"
            return self._render(), 0.0, False
        if arg not in self._clickables(st):
            return f"Invalid action: {arg!r} is not clickable on this page.", 0.0, True
        if arg == "back to search":
            st.page, st.results, st.product, st.selected = "search", [], -1, {}
        elif arg == "next >":
            st.result_page += 1
        elif arg == "< prev":
            if st.page == "results":
                st.result_page -= 1
            elif st.page == "item":
                st.page, st.product, st.selected = "results", -1, {}
            else:
                st.page = "item"
        elif arg in _DETAILS:
            st.page, st.detail = "detail", arg
        elif arg == "buy now":
            st.done = True
            r = reward(self.catalog.products[st.product], st.selected, st.goal)
            return f"Thank you for shopping with us! [SEP] Your score (min 0.0, max 1.0) [SEP] {r:.2f}", r, False
        elif st.page == "results":
            st.page, st.product, st.selected = "item", self.catalog.by_asin[arg], {}
        else:  # an option value of the product
            for dim, values in self.catalog.products[st.product].options.items():
                if arg in values:
                    st.selected[dim] = arg
            return f"You have clicked {arg}.", 0.0, False
        return self._render(), 0.0, False

    # -- pages -------------------------------------------------------------------------------
    def _clickables(self, st: _State) -> list[str]:
        """The lower-cased clickable values of the current page, in page order."""
        if st.page == "search":
            return []
        if st.page == "results":
            out = ["back to search"]
            if st.result_page > 0:
                out.append("< prev")
            if (st.result_page + 1) * RESULTS_PER_PAGE < len(st.results):
                out.append("next >")
            out += [self.catalog.products[i].asin.lower() for i in self._page_items(st)]
            return out
        if st.page == "item":
            p = self.catalog.products[st.product]
            return ["back to search", "< prev", *(v for vals in p.options.values() for v in vals),
                    "description", "features", "reviews", "buy now"]
        return ["back to search", "< prev"]

    def _page_items(self, st: _State) -> list[int]:
        start = st.result_page * RESULTS_PER_PAGE
        return st.results[start:start + RESULTS_PER_PAGE]

    def _render(self) -> str:
        st = self._state
        assert st is not None
        if st.page == "search":
            return f"WebShop [SEP] Instruction: [SEP] {self._instruction} [SEP] Search"
        parts = ["Back to Search"]
        if st.page == "results":
            parts.append(f"Page {st.result_page + 1} (Total results: {len(st.results)})")
            if st.result_page > 0:
                parts.append("< Prev")
            if (st.result_page + 1) * RESULTS_PER_PAGE < len(st.results):
                parts.append("Next >")
            for i in self._page_items(st):
                p = self.catalog.products[i]
                parts += [p.asin, p.title, f"${p.price:.2f}"]
            return " [SEP] ".join(parts)
        p = self.catalog.products[st.product]
        parts.append("< Prev")
        if st.page == "item":
            for dim, values in p.options.items():
                parts += [dim, *values]
            parts += [p.title, f"Price: ${p.price:.2f}", f"Rating: {p.rating}", "Description",
                      "Features", "Reviews", "Buy Now"]
        elif st.detail == "description":
            parts.append(p.description)
        elif st.detail == "features":
            parts += p.features
        else:
            parts += p.reviews
        return " [SEP] ".join(parts)

    def state_key(self) -> str | None:
        """The page as the agent sees it (a results page by its shown products, page number and
        result count; an item by its product; a detail by its tab), the selected options and
        whether the episode is over: what the next observations and the reward depend on, except
        the results list behind an item page that `< Prev` returns to (a spliced path through such
        a merge fails its replay and is left out, `core.state_merge`)."""
        st = self._state
        if st is None:
            return None
        shown = ""
        if st.page == "results":
            shown = f"{','.join(map(str, self._page_items(st)))}/{st.result_page}/{len(st.results)}"
        selected = ",".join(f"{k}={v}" for k, v in sorted(st.selected.items()))
        detail = st.detail if st.page == "detail" else ""  # a tab left behind shows nowhere
        return f"{st.page}|{shown}|{st.product}|{detail}|{selected}|{int(st.done)}"

    def valid_actions(self) -> list[str] | None:
        st = self._state
        if st is None or st.done:
            return []
        if st.page == "search":
            return [SEARCH_TEMPLATE]
        return [f"click[{c}]" for c in self._clickables(st)]

    # -- expert ------------------------------------------------------------------------------
    def expert(self, task_id: str) -> list[ExpertStep]:
        """A demonstration reaching reward 1: search with the goal's words; take the first
        result (paging up to the last page) that satisfies the goal, else search the target's
        title; pick each wanted option; buy."""
        return self._plan_from_search(self.goal(task_id))

    def replan(self) -> list[ExpertStep] | None:
        """The expert from the current page: buy the open product if it fits (fixing its
        options), else go back to a results page holding a fitting product, else search again."""
        st = self._state
        if st is None or st.done:
            return None
        products, goal, page = self.catalog.products, st.goal, st.page
        steps: list[ExpertStep] = []
        if page == "detail":
            steps.append(ExpertStep("Let me go back to the product page.", "click[< prev]"))
            page = "item"
        if page == "item":
            if satisfies(products[st.product], goal):
                return steps + self._finish(goal, st.selected)
            steps.append(ExpertStep("This product does not fit; let me go back to the results.",
                                    "click[< prev]"))
            page = "results"
        if page == "results":
            pick = next((i for i in st.results if satisfies(products[i], goal)), None)
            if pick is not None:
                moves = st.results.index(pick) // RESULTS_PER_PAGE - st.result_page
                turn = ("None of these products fits; let me look at the next page.", "click[next >]") \
                    if moves > 0 else ("The product I need is on an earlier page.", "click[< prev]")
                steps += [ExpertStep(*turn) for _ in range(abs(moves))]
                return steps + self._open_and_buy(pick, goal)
            steps.append(ExpertStep("No result fits; let me search again.", "click[back to search]"))
        return steps + self._plan_from_search(goal)

    def _plan_from_search(self, goal: Goal) -> list[ExpertStep]:
        products = self.catalog.products
        query = " ".join(goal.query)
        hits = self.catalog.search(query)
        pick = next((i for i in hits if satisfies(products[i], goal)), None)
        steps = [ExpertStep(f"I need {_a(goal.product_type)} {goal.product_type}; let me search for the "
                            "features the instruction asks for.", f"search[{query}]")]
        if pick is None:  # no match in the top 50: the target's exact title finds it
            query = products[self.catalog.by_asin[goal.asin.lower()]].title.lower()
            hits = self.catalog.search(query)
            pick = next(i for i in hits if products[i].asin == goal.asin)
            steps = [ExpertStep(f"I need {_a(goal.product_type)} {goal.product_type}; let me search for "
                                "a product I know fits.", f"search[{query}]")]
        for _ in range(hits.index(pick) // RESULTS_PER_PAGE):
            steps.append(ExpertStep("None of these products fits; let me look at the next page.",
                                    "click[next >]"))
        return steps + self._open_and_buy(pick, goal)

    def _open_and_buy(self, pick: int, goal: Goal) -> list[ExpertStep]:
        p = self.catalog.products[pick]
        return [ExpertStep(f"{p.asin} fits what the instruction asks for; let me open it.",
                           f"click[{p.asin}]"),  # the id as the page shows it: a model copies it unchanged
                *self._finish(goal, {})]

    @staticmethod
    def _finish(goal: Goal, selected: dict[str, str]) -> list[ExpertStep]:
        """On a fitting product's page: select each wanted option not selected yet, then buy."""
        steps = [ExpertStep(f"The instruction wants {dim} {value}; let me select it.", f"click[{value}]")
                 for dim, value in goal.options.items() if selected.get(dim) != value]
        steps.append(ExpertStep("It has everything the instruction asks for; let me buy it.",
                                "click[buy now]"))
        return steps

    def whole_tokens(self) -> list[str]:
        """The product ids, as pages show them: the tokenizer keeps each one whole, so a model
        copies an id from the results page in one step (core.models.tokenizer)."""
        return [p.asin for p in self.catalog.products]

    @classmethod
    def one_shot(cls) -> tuple[str, list[Step]]:
        """The one-shot example: the expert episode of the default catalogue's demo task
        (a task in no split)."""
        return _one_shot()


def _a(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


@functools.cache
def _one_shot() -> tuple[str, list[Step]]:
    env = ShopEnv()
    obs, instruction = env.reset(DEMO_TASK)
    steps = []
    for ex in env.expert(DEMO_TASK):
        res = env.step(ex.action)
        steps.append(Step(action=ex.action, observation=res.observation, thought=ex.thought,
                          reward=res.reward))
    return task_message(instruction, obs), steps
