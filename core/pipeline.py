"""The weak-to-strong experiment end to end (`w2stree pipeline`), and the dashboard's quick fill.

`run_pipeline` reproduces the paper's table on one environment, per seed:

1. models: the env's local models (`<env>-weak`, `<env>-strong`, built if missing) or the
   scale's named models; a scale may run a plain env name in a smaller world of its own
   (`worlds`: the tiny and quick scales play `shop?n_products=200&n_categories=10`, short name
   `tinyshop`);
2. expert demonstrations (policy `expert`, `core.stages.demonstrations`) on `demo_tasks` train tasks;
3. SFT-weak and SFT-strong: each base model fine-tuned on those demonstrations;
4. exploration: the SFT-weak model plays `explore_tasks` train tasks from `explore_from` (0: the
   demonstrated tasks, as the release does) with the paper's schedule (greedy, (0.7, 0.9),
   (1.0, 0.8), (1.0, 0.9); more settings when K > 4);
5. trees (one per task), MCTS on each, TreeDPO pairs (the scale's `pair_granularity`) and the ETO
   baseline (each explored task's expert demonstration against its explored episodes, as the
   release builds it, with only the demonstrations SFT-strong was trained on): the stages of
   `core.stages`, the same functions `w2stree tree / mcts / pairs` run;
6. the strong SFT model trained four ways: W2S-SFT (weak successes), ETO-style DPO, TreeDPO (tree
   pairs; both DPO runs use the SFT-weak model as reference, the paper's W2S setting) and MCTS
   (SFT on one real trajectory along the MCTS best path of every tree that holds a success);
7. SFT-continued, the strong baseline trained further: SFT-strong on its own expert rows for at
   least the DPO stage's steps (the compute-matched control; the tiny scale gives it the larger
   budget dev chose for it);
8. all seven models evaluated greedily on `test_tasks` tasks of the evaluation split (`--split`:
   `dev` while choosing, `test` once; episodes stored, source=eval, under the labels `sft-weak`,
   `sft-strong`, `sft-continued`, `w2s-sft`, `eto-dpo`, `treedpo`, `mcts`);
9. one results row per (method, seed, K) in the store's `results` table (`core.results`); a
   method left without training data gets a "no data" row, never another method's numbers.

With `server` (`w2stree pipeline --server URL[,URL...]`) the rollouts of steps 4, 5 (growth) and 8
run on those completions servers, each trained model loaded there first
(`core.agents.server_models`); the expert demonstrations of step 2 stay in process.

The methods of steps 3 and 6-8 (their training method, data file, budget field of the `Scale`,
reference, labels) are the rows of `core.methods.METHODS`.

Trained models are registered as `<env>-<method>-s<seed>` (with `-k<K>` when the number of
trajectories per task is swept), eval labels get the same `-s<seed>` / `-k<K>` suffixes for seeds
other than 0 and swept K. Training runs are jobs (`w2stree jobs list` shows them); they, the
exploration and the evaluations are units of `core.work`, run `parallel` at a time with one
torch thread each, each started as soon as what it needs is done. The training rows of each run
are kept as JSONL under `<home>/experiments/<experiment id>/` so every job can be re-run by hand.

Scales (`core.scales.SCALES`, `--scale`): `tiny` (the CPU default), `quick` (a smoke test) and
`paper` (real models: a GPU, the models available locally or `HF_HUB_OFFLINE=0`; pass `weak=` /
`strong=` to use others).

`fill_default` is the quick part for the dashboard's empty-store button: models, expert demos,
an exploration by the `noisy-expert` policy (successes and failures), trees, MCTS and pairs.

The word "preset" here means only a training preset (`core.train.config.PRESETS`, a scale's
`train_preset`); the local models of an env are its "local models" (`core.models`).
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from core import stages
from core.agents.base import PAPER_SCHEDULE, sampling_schedule
from core.agents.server_models import check_reachable, serving
from core.env_slots import Pool
from core.envs import make_env
from core.envs.base import env_slug, select_tasks
from core.errors import UserError
from core.grow import grow
from core.methods import BASELINES, BY_NAME, STRONG, ExperimentMethod, training_order
from core.models import build_local_models, local_model_names
from core.paths import home, models_dir
from core.run_clock import RunClock, plan
from core.scales import SCALES, Scale, budget
from core.settings import GrowSettings
from core.store import Store
from core.train import make_config
from core.train.data import best_path_rows, pair_rows, sft_rows, write_rows
from core.trajectory import Trajectory, new_id
from core.tree_data import Tree
from core.work import LiveCount, Progress, Reporter, Unit, run_units

# -- small helpers ---------------------------------------------------------------------------------

def suffix(seed: int, k: int | None) -> str:
    """Name suffix of a run: `-s<seed>` plus `-k<K>` when K is swept."""
    return f"-s{seed}" + (f"-k{k}" if k is not None else "")


def eval_label(label: str, seed: int, k: int | None) -> str:
    """The eval label of a method: plain for seed 0 at the default K (what the Compare page
    shows by default), suffixed otherwise."""
    return label if seed == 0 and k is None else label + suffix(seed, k)


def _cap(items: list[Any], n: int | None, seed: int) -> list[Any]:
    """A seeded random subset of at most n items, in their original order."""
    if n is None or len(items) <= n:
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]


# -- the experiment ------------------------------------------------------------------------------------

def run_pipeline(env: str = "shop", scale: str | Scale = "tiny", seeds: Sequence[int] = (0,),
                 trajs_per_task: int | Sequence[int] | None = None,
                 progress: Progress | bool | None = True, *, store: Store, weak: str | None = None,
                 strong: str | None = None, test_tasks: int | None = None, split: str | None = None,
                 experiment_id: str | None = None, reuse: bool = False, grow_budget: int | None = None,
                 grow_rule: str | None = None, merge: str | None = None, pool: Pool = Pool(),
                 server: str | None = None) -> pd.DataFrame:
    """Run the weak-to-strong experiment (module docstring) and return one row per
    (method, seed, K): method, label, model, seed, trajs_per_task, avg_reward, success_rate,
    n_examples, n_episodes. Rows are also stored in the store's `results` table under one
    experiment id. `trajs_per_task` may be a list of K values (Figure 4): the weak model explores
    once with the largest K and each K uses the first K trajectories of every task. `split` is
    where the models are evaluated (default: the scale's `eval_split`, `test`): `dev` for every
    choice of sizes and hyper-parameters, `test` once, by the final run. With `reuse`, trainings
    and explorations that already ran on identical inputs are taken as they are (`core.reuse`):
    a test run after a dev run of the same design trains only the new seeds. `grow_budget` /
    `grow_rule` override the scale's targeted growth (`Scale.grow_budget`), `merge` its tree merge. `pool`:
    where the envs of the exploration, growth and evaluations run (`core.env_slots.Pool`).
    `server` (`URL[,URL...]`): every rollout of a trained model (exploration, growth, evaluation)
    goes to these completions servers, each model loaded there first
    (`core.agents.server_models.serving`); the expert's demonstrations stay in process. Stage wall
    times (summed over units running side by side) are in `df.attrs["timings"]`."""
    cfg = SCALES.get(scale) if isinstance(scale, str) else scale
    if cfg is None:
        raise UserError(f"unknown pipeline scale {scale!r}; use one of {', '.join(SCALES)}")
    cfg = dataclasses.replace(cfg, weak=weak or cfg.weak, strong=strong or cfg.strong,
                              test_tasks=test_tasks or cfg.test_tasks, eval_split=split or cfg.eval_split,
                              grow_budget=cfg.grow_budget if grow_budget is None else grow_budget,
                              grow_rule=grow_rule or cfg.grow_rule, merge=merge or cfg.merge)
    stages.TreeSettings(cfg.merge).check()
    if server:
        check_reachable(server)  # a malformed or dead URL fails before any work
    if cfg.grow_budget:
        grow_settings(cfg).check()  # a bad value fails before any work
    if "?" not in env and env in cfg.worlds:
        env = f"{env}?{cfg.worlds[env]}"
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    if not seeds:
        raise UserError("no seeds given; pass --seeds 0 (or several)")
    sweep = trajs_per_task is not None and not isinstance(trajs_per_task, int)
    if trajs_per_task is None:
        ks = [cfg.trajs_per_task]
    elif isinstance(trajs_per_task, int):
        ks = [trajs_per_task]
    else:
        ks = sorted(set(int(k) for k in trajs_per_task))
        if not ks:
            raise UserError("--trajs-per-task got no values")
    for k in ks:
        sampling_schedule(k)  # validates K
    rep = Reporter(progress)
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{new_id()[:4]}"
    exp_id = experiment_id or f"exp-{env_slug(env)}-{cfg.name}-{cfg.eval_split}-{stamp}"
    exp_dir = home() / "experiments" / exp_id
    exp_dir.mkdir(parents=True, exist_ok=True)

    with make_env(env) as e:
        train_ids, test_ids = select_tasks(e, "train"), select_tasks(e, cfg.eval_split)
    need = max(cfg.demo_tasks, cfg.explore_from + cfg.explore_tasks)
    if len(train_ids) < need:
        raise UserError(f"{env} has {len(train_ids)} train tasks; scale {cfg.name} needs {need}: "
                        "choose a smaller scale")
    demo_ids = train_ids[: cfg.demo_tasks]
    explore_ids = train_ids[cfg.explore_from: cfg.explore_from + cfg.explore_tasks]
    test_ids = test_ids[: cfg.test_tasks]
    rep.clock = RunClock(cfg, plan(cfg, len(seeds), ks, len(demo_ids), len(explore_ids), len(test_ids)), rep.t0)

    t0 = time.monotonic()
    weak_base, strong_base = cfg.weak, cfg.strong
    if not weak_base or not strong_base:
        rep.say(0.01, f"models: local models of {env}")
        build_local_models(env, store)
        names = local_model_names(env)
        weak_base, strong_base = weak_base or names["weak"], strong_base or names["strong"]
    demos = stages.demonstrations(store, env, demo_ids)
    demo_file = _write(sft_rows(demos), exp_dir / "expert.jsonl")
    rep.timed("models + expert demos", t0)
    rep.say(0.03, f"expert demonstrations: {len(demos)} tasks")

    rows: list[dict[str, Any]] = []
    for si, seed in enumerate(seeds):
        run = SeedRun(store=store, env=env, cfg=cfg, seed=seed, test_ids=test_ids, folder=exp_dir / f"s{seed}",
                      rep=rep, ks=ks, sweep=sweep, weak_base=weak_base, strong_base=strong_base,
                      demo_file=demo_file, demo_ids=demo_ids, explore_ids=explore_ids, reuse=reuse, pool=pool,
                      server=server,
                      frac=lambda f, b=si / len(seeds), s=1 / len(seeds): b + s * f)
        seed_rows = run.run()
        store.add_results([{**r, "experiment_id": exp_id, "env": env} for r in seed_rows])  # as each seed ends
        rows += seed_rows
    df = pd.DataFrame(rows)
    df.attrs.update(timings=dict(rep.timings), experiment_id=exp_id, wall_s=time.monotonic() - rep.t0)
    rep.say(1.0, f"experiment {exp_id} done in {df.attrs['wall_s']:.0f}s" + rep.clock.verdict(df.attrs["wall_s"]))
    return df


def _write(rows: list[dict[str, Any]], path: Path) -> Path:
    write_rows(rows, path)
    return path


@dataclass(kw_only=True)
class SeedRun:
    """One seed of the experiment: SFT baselines and exploration, then per K the trees, pairs,
    four strong trainings and all evaluations. Keyword-only; a caller that only evaluates or trains
    the strong methods (docs/scripts) names what that needs and leaves the rest at its default."""

    store: Store
    env: str
    cfg: Scale
    seed: int
    test_ids: list[str]
    folder: Path
    rep: Reporter
    ks: list[int] = dataclasses.field(default_factory=lambda: [4])
    sweep: bool = False  # several K: model and eval names carry -k<K>
    weak_base: str = ""
    strong_base: str = ""
    demo_file: Path | None = None  # the expert rows SFT-weak and SFT-strong train on
    demo_ids: list[str] = dataclasses.field(default_factory=list)  # the demonstrated train tasks
    explore_ids: list[str] = dataclasses.field(default_factory=list)
    frac: Callable[[float], float] = lambda f: f  # this seed's share of the whole run's progress
    reuse: bool = False  # take trainings and explorations from identical earlier runs (core.reuse)
    pool: Pool = Pool()  # where the envs of the exploration, growth and evaluations run
    server: str | None = None  # completions servers every rollout of a trained model goes to

    def served(self) -> dict[str, Any]:
        """The rollout arguments that send a model to the servers, loading it there first (none
        without servers: the keys of reusable units stay what they were)."""
        return dict(server=self.server, load=True) if self.server else {}

    def model_path(self, name: str) -> Path:
        return models_dir() / name

    def eval_unit(self, method: str, model: Path, k: int | None, deps: tuple[str, ...]) -> Unit:
        """`method`'s model evaluated greedily on the test tasks, once `deps` are done."""
        return Unit(f"eval {method}", stage=stages.evaluate, deps=deps, kwargs=dict(
            model=str(model), env=self.env, task_ids=self.test_ids, max_steps=self.cfg.max_steps,
            batch_size=self.cfg.gen_batch, label=eval_label(BY_NAME[method].label, self.seed, k), pool=self.pool,
            **self.served()))

    def model_name(self, method: ExperimentMethod) -> str:
        """The name of this seed's model of an SFT baseline (`<env>-<label>-s<seed>`)."""
        return f"{env_slug(self.env)}-{method.label}-s{self.seed}"

    def sft_model(self, which: str) -> str:
        """The name of this seed's SFT-`which` model (weak or strong)."""
        return self.model_name(BY_NAME[f"SFT-{which}"])

    @property
    def n_demos(self) -> int:
        return len(self.demo_ids)

    def sft_paths(self) -> tuple[Path, Path]:
        """The folders of this seed's SFT-weak and SFT-strong models."""
        return self.model_path(self.sft_model("weak")), self.model_path(self.sft_model("strong"))

    def run(self) -> list[dict[str, Any]]:
        """The seed's results rows: per K, the two SFT baselines and the four strong methods."""
        self.folder.mkdir(parents=True, exist_ok=True)
        weak_sft, strong_sft = self.sft_paths()
        explored, base_rows = self.sft_and_exploration()
        # the ETO baseline's expert side: only demonstrations SFT-strong was trained on, as in the release
        demo_set = set(self.demo_ids)
        experts = stages.demonstrations(self.store, self.env, [t for t in self.explore_ids if t in demo_set])
        rows: list[dict[str, Any]] = []
        for ki, k in enumerate(self.ks):
            labels = {s.name() for s in sampling_schedule(k)}
            trajs = [t for t in explored if t.meta.get("sampling") in labels]
            kdir = self.folder / f"k{k}"
            kdir.mkdir(exist_ok=True)
            files, counts = training_files(self.store, self.cfg, trajs, experts, self.seed, kdir, self.rep,
                                           save=(k == max(self.ks)), explorer=self.cfg.explorer or str(weak_sft),
                                           pool=self.pool, server=self.server)
            strong = self.strong_methods(k if self.sweep else None, files, counts, weak_sft, strong_sft, ki)
            rows += [{**r, "seed": self.seed, "trajs_per_task": k} for r in base_rows + strong]
        return rows

    def sft_and_exploration(self) -> tuple[list[Trajectory], list[dict[str, Any]]]:
        """SFT-weak and SFT-strong trained on the demonstrations and evaluated; SFT-weak (or the
        scale's explorer) explores as soon as it is trained; SFT-continued (SFT-strong trained
        further on the same expert rows, `continued_budget`) once SFT-strong is. Returns the
        explored trajectories and the three baselines' rows."""
        cfg, env, seed, rep = self.cfg, self.env, self.seed, self.rep
        weak_sft = self.model_path(self.sft_model("weak"))
        bases = {"weak": self.weak_base, "strong": self.strong_base}
        k_max, data = max(self.ks), str(self.demo_file)

        def train(m: ExperimentMethod) -> Unit:  # from a base model, or from another baseline once it is trained
            start = bases.get(m.start) or str(self.model_path(self.model_name(BY_NAME[m.start])))
            return train_unit(m.name, m.trainer, cfg, budget(cfg, m), self.n_demos,
                              deps=() if m.start in bases else (f"train {m.start}",), model=start, data=data,
                              output=self.model_name(m), seed=seed)

        def evaluate(m: ExperimentMethod) -> Unit:
            return self.eval_unit(m.name, self.model_path(self.model_name(m)), None, (f"train {m.name}",))

        first = [m for m in BASELINES if m.start in bases]
        later = [m for m in BASELINES if m.start not in bases]
        explore = Unit("explore", stage=stages.run_policy, deps=("train SFT-weak",), reusable=True, kwargs=dict(
            env=env, policy=cfg.explorer or str(weak_sft), task_ids=self.explore_ids,
            schedule=sampling_schedule(k_max), label=cfg.explorer or self.sft_model("weak"), seed=seed,
            max_steps=cfg.max_steps, batch_size=cfg.gen_batch, pool=self.pool, **self.served()))
        rep.say(self.frac(0.02), f"seed {seed}: SFT-weak and SFT-strong on {self.n_demos} expert "
                                 f"demonstrations; SFT-weak explores {len(self.explore_ids)} tasks x {k_max}")
        done = run_units([*map(train, first), explore, *map(evaluate, first),
                          *(u for m in later for u in (train(m), evaluate(m)))],
                         self.store, cfg.parallel, rep, self.reuse)
        explored = self.store.trajectories(run_id=done["explore"].result)
        n = len(explored)
        rep.say(self.frac(0.4), f"seed {seed}: exploration avg reward "
                                f"{sum(t.reward for t in explored) / max(n, 1):.3f}, success rate "
                                f"{sum(bool(t.success) for t in explored) / max(n, 1):.3f} ({n} episodes)")
        return explored, [dict(method=m.name, model=self.model_name(m), n_examples=self.n_demos,
                               **done[f"eval {m.name}"].result.averages()) for m in BASELINES]

    def strong_methods(self, k: int | None, files: dict[str, Path], counts: dict[str, int], weak_sft: Path,
                       strong_sft: Path, ki: int) -> list[dict[str, Any]]:
        """Train the strong SFT model on one K's data by each strong method of the table
        (`core.methods.STRONG`, longest training first) and evaluate them."""
        cfg, env, rep = self.cfg, self.env, self.rep
        sfx = suffix(self.seed, k)
        rep.say(self.frac(0.5 + 0.5 * ki / len(self.ks)),
                f"seed {self.seed} K={k or max(self.ks)}: training the strong model four ways")
        trains, evals, models = [], [], {}
        for m in training_order():
            if counts[m.data] == 0:  # nothing to learn from: the table says so
                rep.say(None, f"{m.no_data}: {m.name} has no training data")
                continue
            name = f"{env_slug(env)}-{m.label}{sfx}"
            models[m.name] = self.model_path(name)
            extra = dict(ref=str(weak_sft)) if m.ref else {}
            trains.append(train_unit(m.name, m.trainer, cfg, budget(cfg, m), counts[m.data], model=str(strong_sft),
                                     data=str(files[m.data]), output=name, seed=self.seed, **extra))
            evals.append(self.eval_unit(m.name, models[m.name], k, (f"train {m.name}",)))
        done = run_units(trains + evals, self.store, cfg.parallel, rep, self.reuse)
        no_data = dict(avg_reward=None, success_rate=None, n_episodes=0, run_id=None, label="")
        return [dict(method=m.name, model=models[m.name].name if m.name in models else "", n_examples=counts[m.data],
                     **(done[f"eval {m.name}"].result.averages() if f"eval {m.name}" in done else no_data))
                for m in STRONG]


def train_unit(method: str, kind: str, cfg: Scale, overrides: dict[str, Any], n: int,
               deps: tuple[str, ...] = (), **fields: Any) -> Unit:
    """A training job of `kind` on `n` rows, started once the units named in `deps` are done: the
    scale's preset, then `overrides`, then `fields`."""
    config = make_config(kind, cfg.train_preset, **{**overrides, **fields})
    return Unit(f"train {method}", kind=kind, config=config, n_examples=n, deps=deps)


def training_files(store: Store, cfg: Scale, trajs: list[Trajectory], experts: list[Trajectory],
                   seed: int, folder: Path, rep: Reporter, save: bool, explorer: str = "", pool: Pool = Pool(),
                   server: str | None = None) -> tuple[dict[str, Path], dict[str, int]]:
    """Trees, MCTS, pairs and the four training files (in `folder`) of one set of exploration
    trajectories (`experts`: the explored tasks' expert episodes, for the ETO baseline); with
    `save` the trees and pairs also go to the store for the dashboard. With the scale's
    `grow_budget`, the trees are stored and grown by `explorer` first (`grown_trees`, envs in
    `pool`, on the completions servers `server` when given)."""
    t0 = time.monotonic()
    settings, mcts = stages.TreeSettings(cfg.merge), stages.MCTSSettings(iterations=cfg.mcts_iterations)
    tree_trajs = stages.tree_trajectories(trajs, settings)  # the state merge's paths, spliced ones too
    trees = stages.score_trees(stages.grow_trees(tree_trajs, settings), mcts)
    if cfg.grow_budget and trees:
        trees, grown = grown_trees(store, cfg, trees, tree_trajs, explorer, seed, rep, pool, server)
        tree_trajs = stages.tree_trajectories(trajs + grown, settings)
        if cfg.merge == "state":  # the grown episodes meet the others' states too
            trees = stages.score_trees(stages.grow_trees(tree_trajs, settings), mcts)
    tpairs = stages.cut_pairs(trees, stages.PairSettings(cfg.pair_granularity))
    epairs = stages.cut_pairs(trees, stages.PairSettings("trajectory"), trajs, experts)
    if save:
        stages.save_tree_data(store, trees, {cfg.pair_granularity: tpairs, "trajectory": epairs}, tree_trajs)
    best_paths, no_success = best_path_rows(trees, tree_trajs)
    data = {  # the rows of successes:ENV:MODEL, best-paths:ENV, pairs:ENV:<granularity>, pairs:ENV:trajectory
        "successes": sft_rows([t for t in trajs if t.success]),
        "best_paths": best_paths,
        "tree_pairs": _cap(pair_rows(tpairs), cfg.max_pairs, seed),
        "eto_pairs": _cap(pair_rows(epairs), cfg.max_pairs, seed),
    }
    files = {name: _write(rows, folder / f"{name}.jsonl") for name, rows in data.items()}
    counts = {name: len(rows) for name, rows in data.items()}
    n_branch = sum(len(g.branching()) for g in trees)
    n_both = sum(1 for g in trees if g.successes[0] and g.failures[0])
    rep.timed("trees + MCTS + pairs", t0)
    rep.say(None, f"{len(trees)} trees ({n_both} with both a success and a failure, {n_branch} branching "
                  f"nodes), {len(tpairs)} tree pairs, {len(epairs)} ETO pairs; training rows: {counts} "
                  f"(MCTS skips {no_success} trees without a success)")
    return files, counts


def grown_trees(store: Store, cfg: Scale, trees: list[Tree], paths: list[Trajectory], explorer: str, seed: int,
                rep: Reporter, pool: Pool = Pool(), server: str | None = None) -> tuple[list[Tree], list[Trajectory]]:
    """The trees stored (with their spliced `paths`), then grown by `explorer` with the scale's
    growth budget and rule (`core.grow`: every continuation replays its node's prefix in a fresh
    env; a model on the completions servers `server`, loaded there first); returns the grown trees
    (their MCTS rerun) and the new episodes."""
    if not explorer:
        raise UserError("targeted growth needs an explorer: the SFT-weak model or a policy name")
    stages.save_tree_data(store, trees, paths=paths)
    ids = [g.tree_id for g in trees]
    report = grow(store, trees[0].env, explorer, grow_settings(cfg, seed), tree_ids=ids, pool=pool,
                  server=serving(server, explorer, store))
    rep.say(None, report.line())
    grown = store.trajectories(traj_ids=[t for r in report.results for t in r.traj_ids])
    return store.load_trees(tree_ids=ids), grown


def grow_settings(cfg: Scale, seed: int = 0) -> GrowSettings:
    """The scale's targeted growth (`grow_budget`, `grow_rule`) within its episode cap."""
    return GrowSettings(budget=cfg.grow_budget, rule=cfg.grow_rule, max_steps=cfg.max_steps or 10, seed=seed)


# -- the dashboard's quick fill --------------------------------------------------------------------------

def fill_default(store: Store, progress: Progress | None = None, env: str = "shop", n_tasks: int = 20) -> None:
    """Fill an empty store for the dashboard in a minute or two: the env's local models (built if
    missing), expert demonstrations of `n_tasks` train tasks, an exploration of the same tasks
    with the paper schedule by the `noisy-expert` policy, trees, MCTS (1000 iterations), step
    pairs and ETO pairs."""
    rep = Reporter(progress)
    rep.say(0.0, "building the local models (tokenizer, weak, strong)")
    build_local_models(env, store, n_tasks=200)
    ids = stages.split_tasks(env, "train")[:n_tasks]
    rep.say(0.4, f"expert demonstrations of {len(ids)} tasks")
    experts = stages.demonstrations(store, env, ids)
    rep.say(0.55, "exploration (noisy expert, paper schedule)")
    trajs = store.trajectories(run_id=stages.run_policy(store, env, "noisy-expert", ids, PAPER_SCHEDULE,
                                                        progress=LiveCount(rep, "exploration")))
    rep.say(0.75, "trees, MCTS and pairs")
    trees = stages.score_trees(stages.grow_trees(trajs))
    stages.save_tree_data(store, trees, {
        "step": stages.cut_pairs(trees, stages.PairSettings("step")),
        "trajectory": stages.cut_pairs(trees, stages.PairSettings("trajectory"), trajs, experts)})
    rep.say(1.0, f"done: {len(trajs)} trajectories, {len(trees)} trees")
