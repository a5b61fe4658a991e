"""Training: SFT / TreeDPO (step, continuation) / MCTS-SFT / ETO-DPO on the tiny presets, with real
TRL trainers, real trees and pairs from the built-in shop; observation masking; configs; data specs."""

from __future__ import annotations

import pickle
import random

import pytest
import torch

from core.errors import UserError
from core.paths import jobs_dir

TINY = {"weak": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                     num_key_value_heads=1),
        "strong": dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=1)}


def tiny_models(base) -> dict:
    """The shop presets, shrunk (built once per test session, shared by the training test files)."""
    from core.models import build_local_models
    from core.store import Store

    root = base / "train-models"
    return build_local_models("shop", store=Store(root / "models.duckdb"), out_dir=root, n_tasks=5, configs=TINY)


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    return tiny_models(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def chat_models(tmp_path_factory):
    """Tiny presets prompted with the whole conversation (no one-decision view): multi-turn rows."""
    from core.models import build_local_models
    from core.store import Store

    root = tmp_path_factory.getbasetemp() / "chat-models"
    return build_local_models("shop", store=Store(root / "models.duckdb"), out_dir=root, n_tasks=5, configs=TINY,
                         decision_history=None)


def fill_store(store, n_tasks: int = 3, env: str = "shop") -> None:
    """Expert + random exploration on a few shop tasks -> trees -> MCTS -> step, continuation and
    ETO-style pairs, all through the real modules."""
    from core.agents.scripted import ExpertPolicy, RandomPolicy
    from core.collect import collect
    from core.envs.base import make_env
    from core.mcts import run_mcts
    from core.pairs import eto_pairs, tree_pairs
    from core.tree import build_trees

    tids = [t.task_id for t in make_env(env).tasks("train")[:n_tasks]]
    collect(store, env, ExpertPolicy(env), tids, model="expert", progress=False)
    collect(store, env, RandomPolicy(seed=1), tids, model="weak", progress=False, max_steps=4)
    trees = build_trees(store.trajectories(env=env))
    for g in trees:
        run_mcts(g, iterations=100)
    store.save_trees(trees)
    pairs = [p for g in trees for gran in ("step", "continuation") for p in tree_pairs(g, gran)]
    pairs += eto_pairs(store.trajectories(env=env), mode="weak")
    store.save_pairs(pairs)


@pytest.fixture(scope="session")
def filled_db(tmp_path_factory):
    """A store file filled once per session (fill_store); tests get a copy. Its own folder: other
    modules import this fixture (test_packing), and each import is a fixture of its own that would
    otherwise fill the same file again (6 expert episodes instead of 3)."""
    from core.store import Store

    path = tmp_path_factory.mktemp("filled") / "filled.duckdb"
    fill_store(Store(path))
    return path


@pytest.fixture
def filled(store, filled_db):
    import shutil

    from core.store import Store

    shutil.copyfile(filled_db, store.path)
    return Store(store.path)


def weights(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def cfg(kind, models, data, **kw):
    from core.train import make_config

    base = dict(model=str(models["strong"]), data=data, max_steps=2, batch_size=2, save_steps=100)
    return make_config(kind, "tiny", **{**base, **kw})


# -- every trainer moves the weights -------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("kind,data,extra", [
    ("sft", "expert:shop", {}),
    ("mcts", "best-paths:shop", {}),
    ("treedpo", "pairs:shop:step", {"ref": "weak"}),
    ("treedpo", "pairs:shop:continuation", {"ref": "weak"}),
    ("dpo", "pairs:shop:trajectory", {}),  # eto-dpo by its earlier name: recorded as eto-dpo
])
def test_trainer_changes_weights_and_registers_model(filled, models, kind, data, extra):
    from core.train import method, train

    if extra.get("ref"):
        extra = {"ref": str(models[extra["ref"]])}
    out = train(kind, cfg(kind, models, data, **extra), filled)
    before, after = weights(models["strong"]), weights(out)
    assert before.keys() == after.keys()
    assert len(changed(before, after)) >= len(before) // 2  # full fine-tuning moves (nearly) every tensor
    row = filled.models().set_index("name").loc[out.name]
    assert row["role"] == method(kind).name and row["base"] == "shop-strong" and row["job_id"]
    job = filled.query("SELECT * FROM jobs WHERE job_id = ?", [row["job_id"]]).iloc[0]
    assert job["status"] == "succeeded" and job["step"] == 2
    names = set(filled.query("SELECT DISTINCT name FROM metrics WHERE job_id = ?", [row["job_id"]])["name"])
    assert "loss" in names
    if method(kind).preference:
        assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= names


@pytest.mark.slow
def test_every_job_writes_tensorboard_logs_and_the_cli_prints_how_to_open_them(filled, models, capsys):
    import os

    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from core.cli import main
    from core.train import train
    from core.train.tensorboard import LOG_DIR_VARIABLE

    out = train("sft", cfg("sft", models, "expert:shop"), filled)
    job_id = filled.models().set_index("name").loc[out.name, "job_id"]
    logs = jobs_dir() / job_id / "tensorboard"
    events = EventAccumulator(str(logs)).Reload()
    losses = [e.value for e in events.Scalars("train/loss")]
    logged = filled.query("SELECT value FROM metrics WHERE job_id = ? AND name = 'loss' ORDER BY step", [job_id])
    assert losses == pytest.approx(logged["value"].tolist())  # the job's own metrics, step for step
    assert LOG_DIR_VARIABLE not in os.environ  # the in-process job left the environment as it was
    capsys.readouterr()
    assert main(["jobs", "tensorboard", job_id]) == 0
    assert capsys.readouterr().out.strip() == f"tensorboard --logdir {logs} --host 127.0.0.1"
    for f in logs.iterdir():
        f.unlink()
    assert main(["jobs", "tensorboard", job_id]) == 2
    assert "wrote no TensorBoard logs" in capsys.readouterr().err


@pytest.mark.slow
def test_lora_trains_only_the_adapter(filled, models, tmp_path):
    from core.train.data import build_rows
    from core.train.dpo import build_dpo_trainer

    rows = build_rows("pairs:shop:step", filled)
    trainer, _ = build_dpo_trainer(cfg("treedpo", models, "x", lora=True, lr=1e-2), rows, tmp_path)
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    moved = changed(before, after)
    assert moved and all("lora_" in k for k in moved)
    assert any("lora_B" in k for k in moved)  # B starts at zero: it moving means the adapter learned
    assert all(not p.requires_grad for k, p in after.items() if "lora_" not in k)


# -- observation masking -------------------------------------------------------------------------------

@pytest.mark.slow
def test_continuation_pairs_mask_observation_tokens(filled, chat_models, tmp_path):
    """The per-token loss mask of multi-turn completions is exactly the template's assistant mask
    (its {% generation %} spans, an independent oracle), so observation tokens add nothing to the
    sequence log-probabilities (no gradient), while plain TRL counts them."""
    from core.train.data import build_rows
    from core.train.dpo import build_dpo_trainer
    from core.train.masks import boundary_mask

    rows = build_rows("pairs:shop:continuation", filled)
    multi = [r for r in rows if len(r["chosen"]) > 1 and len(r["rejected"]) > 1]
    assert multi, "the fixture should give continuation pairs with observation turns"
    # the unpacked rows (the tiny preset packs trees; tests/test_packing.py checks packed masks)
    trainer, tok = build_dpo_trainer(cfg("treedpo", chat_models, "x", packing="none"), multi[:2], tmp_path)
    examples = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    batch = trainer.data_collator(examples)
    n = len(examples)
    for i, ex in enumerate(examples):
        for j, side in enumerate(("chosen", "rejected")):
            full = tok.apply_chat_template(ex["prompt"] + ex[side], tokenize=True, return_dict=True,
                                           return_assistant_tokens_mask=True)
            oracle = full["assistant_masks"][len(ex["prompt_ids"]):]
            assert list(ex[f"{side}_loss_mask"]) == list(oracle)
            # the template-agnostic fallback finds the same spans, plus the newline after <|im_end|>
            fallback = boundary_mask(tok, ex["prompt"], ex[side], len(ex["prompt_ids"]), len(oracle))
            extra = [k for k, (a, b) in enumerate(zip(fallback, oracle, strict=True)) if a != b]
            assert all(fallback[k] == 1 and not tok.decode(ex[f"{side}_ids"][k]).strip() for k in extra)
            assert sum(fallback) - sum(oracle) == sum(m["role"] == "assistant" for m in ex[side])
            row = batch["completion_mask"][i + j * n]
            ids = batch["input_ids"][i + j * n]
            start = len(ex["prompt_ids"])
            kept = tok.decode(ids[row.bool()])
            dropped = tok.decode(ids[start:start + len(ex[f"{side}_ids"])][~row[start:start + len(oracle)].bool()])
            assert "Observation:" not in kept and "Observation:" in dropped
            assert "Action:" in kept

    # the gradient reaches the last hidden state only at positions predicting an assistant token:
    # position p predicts token p+1, so p gets gradient iff completion_mask[p+1] is 1
    model = trainer.model.train()
    seen = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        seen["h"] = output

    hook = model.model.norm.register_forward_hook(keep)
    try:
        trainer.compute_loss(model, batch).backward()
    finally:
        hook.remove()
    grad = seen["h"].grad.abs().sum(-1)[:, :-1]
    target = batch["completion_mask"][:, 1:].bool()
    assert torch.all(grad[~target] == 0)  # observation, prompt and padding predictions: no gradient
    assert torch.all(grad[target] > 0)
    # and TRL's plain collator would have trained the observation predictions too
    plain = trainer.data_collator.__class__.__mro__[1](pad_token_id=tok.pad_token_id)(examples)
    assert (plain["completion_mask"] > batch["completion_mask"]).any()


def test_step_pairs_go_through_plain_trl_format(filled, models, tmp_path):
    from core.train.data import build_rows
    from core.train.dpo import build_dpo_trainer

    rows = build_rows("pairs:shop:step", filled)
    assert rows and all(len(r["chosen"]) == 1 and r["chosen"][0]["role"] == "assistant" for r in rows)
    assert rows[0]["prompt"][-1]["role"] == "user"
    trainer, _ = build_dpo_trainer(cfg("treedpo", models, "x"), rows[:2], tmp_path)
    assert "chosen_loss_mask" not in trainer.train_dataset.column_names  # no extra masking: TRL as is


# -- data -------------------------------------------------------------------------------------------------

def test_data_specs(filled):
    from core.agents.prompt import env_prefix
    from core.train.data import build_rows, parse_spec

    rows = build_rows("expert:shop", filled)
    assert len(rows) == 3
    prefix = env_prefix("shop")
    assert rows[0]["prompt"][: len(prefix)] == prefix and rows[0]["prompt"][-1]["role"] == "user"
    assert rows[0]["completion"][0]["role"] == rows[0]["completion"][-1]["role"] == "assistant"
    assert any(m["content"].startswith("Observation:") for m in rows[0]["completion"])
    assert len(build_rows("expert:shop?tasks=2", filled)) == 2
    assert build_rows("successes:shop:weak", filled) == [] or all(
        r["completion"] for r in build_rows("successes:shop:weak", filled))
    assert len(build_rows("best-paths:shop", filled)) == 3
    for bad in ("expert", "pairs:shop:nope", "expert:shop?foo=1", "nope:shop", "/no/such/file.jsonl",
                "expert:shop?tasks=x"):
        with pytest.raises(UserError):
            parse_spec(bad)


def test_data_specs_reach_an_env_with_parameters(store):
    """The embedded default's env carries parameters (`shop?n_products=...`): the Train page's spec
    for it reaches its rows (it was rejected as malformed), and options still apply."""
    from core.train.data import build_rows, parse_spec
    from dashboard.train_shaping import data_spec

    env = "shop?n_products=50&n_categories=10"
    fill_store(store, n_tasks=2, env=env)
    assert len(build_rows(data_spec("expert", env), store)) == 2
    assert len(build_rows(data_spec("expert", env, tasks=1), store)) == 1
    assert build_rows(f"expert:{env}", store) == build_rows(data_spec("expert", env), store)
    steps = store.pairs(env=env, granularity="step")
    assert steps and len(build_rows(data_spec("pairs", env, "step"), store)) == len(steps)
    assert build_rows(data_spec("pairs", env, "step", min_margin=2.0), store) == []  # margins are <= 1
    assert parse_spec(f"pairs:{env}:step?min_margin=0.5").options == {"min_margin": "0.5"}
    assert build_rows("expert:shop", store) == []  # the plain shop is another env
    with pytest.raises(UserError, match="n_prods"):
        parse_spec("expert:shop?n_prods=50")


def test_file_data_spec(store, tmp_path):
    import json

    from core.train.data import build_rows, check_rows

    rows = [{"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "a"}],
             "rejected": [{"role": "assistant", "content": "b"}]}]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert build_rows(str(path)) == rows
    check_rows(rows, preference=True, what="p.jsonl")
    with pytest.raises(UserError, match="row 0"):
        check_rows(rows, preference=False, what="p.jsonl")


@pytest.mark.slow
def test_datasets_fingerprint_fallback(monkeypatch, filled, models, tmp_path):
    """The GPU image's `PicklingError: Can't pickle MonthDayNano` in datasets' hashing, forced here:
    building the dataset and training still work, with a random fingerprint."""
    import datasets.fingerprint as fp

    from core.train.data import build_rows, to_dataset
    from core.train.dpo import build_dpo_trainer

    real_dumps = fp.dumps

    def failing_dumps(value):
        if isinstance(value, str | bytes | int | float):
            return real_dumps(value)
        raise pickle.PicklingError("Can't pickle <class 'MonthDayNano'>")

    from datasets import Dataset

    plain = Dataset.from_dict({"a": [1]})
    monkeypatch.setattr(fp, "dumps", failing_dumps)
    with pytest.raises(pickle.PicklingError):
        fp.generate_fingerprint(plain)  # the failure is real without the fallback...
    ds = to_dataset([{"a": 1}, {"a": 2}])
    assert len(ds) == 2 and len(ds._fingerprint) == 16
    assert to_dataset([{"a": 1}])._fingerprint != to_dataset([{"a": 1}])._fingerprint  # random
    trainer, _ = build_dpo_trainer(cfg("treedpo", models, "x", max_steps=1), build_rows("pairs:shop:step", filled),
                                   tmp_path)
    trainer.train()  # ...and TRL's own dataset maps survive it too
    assert trainer.state.global_step == 1


# -- length-sorted micro-batches ------------------------------------------------------------------------------

def padding(batches: list[list[int]], lengths: list[int]) -> float:
    """Padded tokens / real tokens of index batches."""
    return sum(max(lengths[i] for i in b) * len(b) for b in batches) / sum(lengths[i] for b in batches for i in b)


def test_sorted_step_sampler_keeps_random_steps_and_sorts_inside_them():
    from core.train.batching import SortedStepSampler

    rng = random.Random(0)
    lengths = [rng.choice([60, 130, 380]) + rng.randrange(40) for _ in range(1000)]  # the shop's three kinds
    sampler = SortedStepSampler(lengths, 32, seed=3)
    order = list(sampler)
    assert sorted(order) == list(range(1000))
    steps = [order[i:i + 32] for i in range(0, 1000, 32)]
    assert all([lengths[i] for i in step] == sorted(lengths[i] for i in step) for step in steps)
    # the steps are random draws, not length buckets: each spans the kinds of rows
    assert sum(max(lengths[i] for i in s) - min(lengths[i] for i in s) > 300 for s in steps) > 25
    micro = [order[i:i + 8] for i in range(0, 1000, 8)]
    assert padding(micro, lengths) < 1.3 < 1.8 < padding(steps, lengths)
    assert list(SortedStepSampler(lengths, 32, seed=3)) == order  # a resumed run sees the same batches
    sampler.set_epoch(1)
    assert list(sampler) != order


@pytest.mark.parametrize("kind,data,batch,micro", [("sft", "expert:shop", 4, 2), ("treedpo", "pairs:shop:step", 2, 1),
                                                    ("treedpo", "pairs:shop:continuation", 2, 1)])
def test_micro_batches_give_the_same_step_as_one_batch(filled, models, tmp_path, kind, data, batch, micro):
    from core.train.data import build_rows
    from core.train.dpo import SortedDPOTrainer, build_dpo_trainer
    from core.train.sft import SortedSFTTrainer, build_sft_trainer

    build = build_sft_trainer if kind == "sft" else build_dpo_trainer
    rows = build_rows(data, filled)[:batch]  # one step holds every row, whatever the sampler's order
    after, logged = {}, {}
    for m in (0, micro):
        trainer, _ = build(cfg(kind, models, "x", batch_size=batch, micro_batch=m, max_steps=1, warmup_ratio=0.0,
                               lr_scheduler="constant_with_warmup"), rows, tmp_path / str(m))
        assert isinstance(trainer, (SortedSFTTrainer, SortedDPOTrainer)) == (m == micro)
        trainer.train()
        after[m] = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
        logged[m] = trainer.state.log_history[0]
    assert logged[0]["loss"] == pytest.approx(logged[micro]["loss"], rel=1e-5)
    assert logged[0]["grad_norm"] == pytest.approx(logged[micro]["grad_norm"], rel=1e-5)  # same scale, not only sign
    # Adam moves every weight by ~lr (>= 2e-4) at step 1: a flipped gradient sign would show as ~2 lr
    assert max(float((after[0][k] - after[micro][k]).abs().max()) for k in after[0]) < 1e-5
    first = next(iter(after[0]))
    assert not torch.equal(after[0][first], weights(models["strong"])[first])  # the step moved the weights


def test_tiny_sft_pads_its_micro_batches_little(filled, models, tmp_path):
    from core.train.data import build_rows
    from core.train.sft import build_sft_trainer

    rows = build_rows("expert:shop", filled) * 4  # each length four times: a sorted step pads little

    def loader_padding(micro: int) -> tuple[float, int]:
        trainer, _ = build_sft_trainer(cfg("sft", models, "x", batch_size=16, micro_batch=micro), rows,
                                       tmp_path / str(micro))
        masks = [b["attention_mask"] for b in trainer.get_train_dataloader()]
        return sum(m.numel() for m in masks) / sum(int(m.sum()) for m in masks), sum(len(m) for m in masks)

    (sorted_pad, n), (plain_pad, n_plain) = loader_padding(4), loader_padding(0)
    assert n == n_plain > 40  # every decision row, once
    assert sorted_pad < 1.2 and plain_pad > 1.5, (sorted_pad, plain_pad)


# -- configs ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,over,match", [
    ("sft", {"lr": -1e-5}, "lr"),
    ("sft", {"lr": float("nan")}, "lr"),
    ("treedpo", {"beta": 0.0}, "beta"),
    ("treedpo", {"loss_type": "nope"}, "loss_type"),
    ("sft", {"epochs": 0}, "epochs"),
    ("sft", {"batch_size": 8, "micro_batch": 3}, "micro_batch=3 is invalid; use 0 or a divisor of batch_size=8"),
    ("sft", {"model": "no-such-model"}, "no-such-model"),
    ("treedpo", {"ref": "/no/such/ref", "data": "pairs:shop:step"}, "/no/such/ref"),
    ("treedpo", {"data": "pairs:shop:step"}, "empty"),
    # a method given another method's data: one line naming the data it takes
    ("sft", {"data": "pairs:shop:step"}, "sft trains on expert:ENV or successes:ENV:MODEL"),
    ("treedpo", {"data": "expert:shop"}, "treedpo trains on pairs:ENV:step or pairs:ENV:continuation"),
    ("treedpo", {"data": "pairs:shop:trajectory"}, "treedpo trains on pairs:ENV:step"),
    ("mcts", {"data": "expert:shop"}, r"mcts trains on best-paths:ENV \(or a file of rows\); --data expert:shop"),
    ("eto-dpo", {"data": "pairs:shop:step"}, "eto-dpo trains on pairs:ENV:trajectory"),
    ("dpo", {"data": "pairs:shop:step"}, "eto-dpo trains on pairs:ENV:trajectory"),  # its earlier name
    ("nope", {}, "unknown training method 'nope'; use one of sft, mcts, treedpo, eto-dpo"),
    ("sft", {"data": "expert:nowhere"}, "empty"),
    ("sft", {"output": "../x"}, "output"),
])
def test_bad_configs_rejected_before_any_process(store, models, kind, over, match):
    from core.train import start_job

    base = {"model": str(models["strong"]), "data": "expert:shop", "preset": "tiny", **over}
    with pytest.raises(UserError, match=match) as err:
        start_job(kind, base, store)
    assert "\n" not in str(err.value)
    assert not jobs_dir().exists() or not any(jobs_dir().iterdir())
    assert store.query("SELECT count(*) AS n FROM jobs")["n"][0] == 0


def test_presets_and_command_line():
    from core.cli import build_parser
    from core.cli.train import command_line, config_from_args
    from core.train import make_config

    paper, tiny = make_config("treedpo"), make_config("treedpo", "tiny")
    # the release's values: LoRA r 128 / alpha 256 on q/k/v/o, lr 2e-5, constant after warm-up, clip 0.5
    assert (paper.lr, paper.beta, paper.loss_type, paper.lora_r, paper.lora_alpha, paper.epochs) == (
        2e-5, 0.1, "sigmoid", 128, 256, 3.0)
    assert paper.lora and paper.lora_targets == "q_proj,k_proj,v_proj,o_proj"
    assert (paper.lr_scheduler, paper.max_grad_norm) == ("constant_with_warmup", 0.5)
    assert paper.batch_size * paper.grad_accum == 32
    assert make_config("sft").lr == 2e-5 and make_config("sft").lora and tiny.lr > 1e-4 and not tiny.lora
    with pytest.raises(UserError, match="no field"):
        make_config("sft", beta=0.2)  # SFT has no beta
    c = make_config("treedpo", "tiny", model="m", data="pairs:shop:step", lora=True, beta=0.2, ref="w")
    line = command_line("treedpo", c)
    assert line.startswith("w2stree train treedpo --preset tiny") and "--beta 0.2" in line and "--lora" in line
    args = build_parser().parse_args(line.split()[1:])
    assert config_from_args("treedpo", args) == c


# -- real models on GPUs: the configuration logic, on CPU ------------------------------------------------

def test_trainer_arguments_for_cuda_and_several_processes(monkeypatch, tmp_path):
    """Checkpointing on for CUDA only; the release's schedule and clip; the effective batch stays
    batch_size x grad_accum under a simulated WORLD_SIZE; each rank loads onto its own GPU."""
    from trl import DPOConfig

    from core.train import make_config
    from core.train.common import lora_config, trainer_kwargs, training_device

    paper = make_config("treedpo", model="m", data="d")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    gpu = trainer_kwargs(make_config("treedpo", device="cuda"), tmp_path, DPOConfig, 4096)
    cpu = trainer_kwargs(make_config("treedpo", device="cpu"), tmp_path, DPOConfig, 4096)
    ckpt = next(n for n in ("activation_checkpointing", "gradient_checkpointing") if n in gpu)
    assert gpu[ckpt] is True and cpu[ckpt] is False and cpu["use_cpu"] and not cpu["bf16"]
    assert (gpu["lr_scheduler_type"], gpu["max_grad_norm"]) == ("constant_with_warmup", 0.5)
    assert trainer_kwargs(make_config("sft", "tiny"), tmp_path, DPOConfig, 64)["lr_scheduler_type"] == "cosine"
    for world, accum in ((1, 8), (2, 4), (4, 2), (8, 1), (3, 3)):
        monkeypatch.setenv("WORLD_SIZE", str(world))
        kw = trainer_kwargs(paper, tmp_path, DPOConfig, 4096)
        assert kw["gradient_accumulation_steps"] == accum
        effective = kw["per_device_train_batch_size"] * accum * world
        assert effective == 32 or (world == 3 and effective == 36)  # rounded up where 3 does not divide 8
        assert kw.get("ddp_find_unused_parameters", True) is (world == 1)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert training_device(make_config("sft", device="cuda")) == "cuda:3"
    assert training_device(make_config("sft", device="cpu")) == "cpu"
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # FSDP shards and places the model itself
    assert training_device(make_config("sft", device="cuda")) == "cpu"
    assert sorted(lora_config(paper).target_modules) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert lora_config(make_config("sft", "tiny", lora=True)).target_modules == "all-linear"


def test_trainers_silence_only_the_checkpointing_deprecation(models, tmp_path):
    """TRL's DPO step and PEFT read `is_gradient_checkpointing`, which transformers deprecates with
    a FutureWarning in every job log; building a trainer's arguments ignores that one warning."""
    import warnings

    from transformers import AutoModelForCausalLM
    from trl import DPOConfig

    from core.train import make_config
    from core.train.common import trainer_kwargs

    model = AutoModelForCausalLM.from_pretrained(models["weak"])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert model.is_gradient_checkpointing is False  # what TRL's DPO trainer reads each step
        assert [type(w.message) for w in seen] == [FutureWarning]  # the warning is real
        trainer_kwargs(make_config("treedpo", "tiny", device="cpu"), tmp_path, DPOConfig, 64)
        assert model.is_gradient_checkpointing is False
        warnings.warn("another FutureWarning", FutureWarning, stacklevel=1)
        assert [str(w.message) for w in seen[1:]] == ["another FutureWarning"]


def test_multi_gpu_launch_honours_an_accelerate_config(monkeypatch, tmp_path):
    import json

    from core.jobs import process as jobs

    (tmp_path / "config.json").write_text(json.dumps({"config": {"device": "auto"}}))
    monkeypatch.setattr(jobs, "_gpu_count", lambda: 4)
    monkeypatch.delenv("W2STREE_ACCELERATE_CONFIG", raising=False)
    cmd = jobs.launch_command(tmp_path)
    assert cmd[cmd.index("--multi_gpu") + 1: cmd.index("--multi_gpu") + 3] == ["--num_processes", "4"]
    monkeypatch.setenv("W2STREE_ACCELERATE_CONFIG", "/cfg/fsdp.yaml")
    cmd = jobs.launch_command(tmp_path, resume=True)
    assert "--multi_gpu" not in cmd and "--num_processes" not in cmd  # the config file's FSDP plugin rules
    assert cmd[cmd.index("--config_file") + 1] == "/cfg/fsdp.yaml" and cmd[-1] == "--resume"
    monkeypatch.setattr(jobs, "_gpu_count", lambda: 1)
    assert "accelerate.commands.launch" not in " ".join(jobs.launch_command(tmp_path))


def test_stop_file_checkpoints_and_ends_at_the_step_end(tmp_path):
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from core.train.progress import JobProgress

    progress = JobProgress(tmp_path, write=False)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    state, control = TrainerState(global_step=3, max_steps=10), TrainerControl()
    progress.on_step_end(args, state, control)
    assert not control.should_save and not control.should_training_stop
    (tmp_path / "stop").touch()  # what stop_job writes
    progress.on_step_end(args, state, control)
    assert control.should_save and control.should_training_stop and progress.stop_requested


@pytest.mark.slow
def test_a_real_trainer_honours_the_stop_file_after_one_step(filled, models, tmp_path):
    from core.train.data import build_rows
    from core.train.progress import JobProgress
    from core.train.sft import build_sft_trainer

    (tmp_path / "stop").touch()
    progress = JobProgress(tmp_path, write=False)
    trainer, _ = build_sft_trainer(cfg("sft", models, "x", max_steps=50), build_rows("expert:shop", filled),
                                   tmp_path / "checkpoints", callbacks=[progress])
    trainer.train()
    assert trainer.state.global_step == 1 and progress.stop_requested
    assert (tmp_path / "checkpoints" / "checkpoint-1").is_dir()  # saved before ending


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama3.1", "llama2-chat", "mistral"])
def test_sft_and_dpo_with_llama_and_mistral_templates(filled, chat_models, tmp_path, family):
    """Templates without generation markers (TRL raises for these) train with the project's own
    mask: assistant turns and their end-of-turn only, no prompt, no observation. (Models prompted
    with the whole conversation, as Hugging Face models are.)"""
    from chat_templates import TEMPLATES, with_template

    from core.train.data import build_rows
    from core.train.dpo import build_dpo_trainer
    from core.train.sft import build_sft_trainer

    folder = with_template(chat_models["strong"], tmp_path / family, TEMPLATES[family])
    rows = build_rows("expert:shop", filled)
    trainer, tok = build_sft_trainer(cfg("sft", chat_models, "x", model=str(folder), max_steps=1), rows, tmp_path / "o")
    for ex in trainer.train_dataset:
        ids, labels = ex["input_ids"], ex["labels"]
        kept = tok.decode([t for t, lab in zip(ids, labels) if lab != -100])
        dropped = tok.decode([t for t, lab in zip(ids, labels) if lab == -100])
        assert "Action:" in kept and "Observation:" not in kept and "Observation:" in dropped
        assert "OK" not in kept.split("Action:")[0]  # the prefix's assistant turn is prompt, not trained
        assert kept.count(tok.eos_token if family != "llama3.1" else "<|eot_id|>") == kept.count("Action:")
    trainer.train()
    assert trainer.state.global_step == 1
    pairs = [r for r in build_rows("pairs:shop:continuation", filled) if len(r["chosen"]) > 1]
    dpo, _ = build_dpo_trainer(cfg("treedpo", chat_models, "x", model=str(folder), max_steps=1), pairs[:2], tmp_path / "d")
    assert "chosen_loss_mask" in dpo.train_dataset.column_names
    dpo.train()
    assert dpo.state.global_step == 1


@pytest.mark.slow
def test_lora_merge_from_the_gathered_adapter_equals_the_in_place_merge(filled, models, tmp_path):
    """The sharded (FSDP / DeepSpeed) save path, forced on one CPU process: adapter through the
    trainer's gathering save, merged into a fresh base on rank 0; same weights as merging in place."""
    from core.train.common import save_model
    from core.train.data import build_rows
    from core.train.dpo import build_dpo_trainer

    trainer, tok = build_dpo_trainer(cfg("treedpo", models, "x", lora=True, lr=1e-2, max_steps=1, warmup_ratio=0.0),
                                     build_rows("pairs:shop:step", filled), tmp_path / "ck")
    trainer.train()
    gathered = save_model(trainer, tok, tmp_path / "gathered", merge_lora=True, sharded=True)
    in_place = save_model(trainer, tok, tmp_path / "in-place", merge_lora=True, sharded=False)
    a, b = weights(gathered), weights(in_place)
    assert a.keys() == b.keys() and not any("lora" in k for k in a)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert changed(weights(models["strong"]), a)  # the adapter was really merged in
    assert not (tmp_path / ".gathered.adapter").exists()


def test_torch_requirement_keeps_a_cuda_build_and_ci_takes_the_cpu_wheel():
    """pyproject accepts any recent torch (a GPU machine keeps its CUDA build); the CPU setup
    installs torch==2.13.0 in the same pip command as the project, so pip takes the CPU wheel."""
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_req = next(d for d in deps if re.match(r"torch\b", d))
    assert "==" not in torch_req and ">=" in torch_req
    pip = [ln for ln in (root / ".ci" / "setup").read_text().splitlines() if "pip install" in ln]
    assert any("torch==2.13.0" in ln and "-e" in ln for ln in pip)
