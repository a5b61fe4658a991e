"""Training: SFT / TreeDPO (step, continuation) / MCTS-SFT / ETO-DPO on the tiny presets, with real
TRL trainers, real trees and pairs from the built-in shop; observation masking; configs; data specs."""

from __future__ import annotations

import pickle

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
    from core.models import build_presets
    from core.store import Store

    root = base / "train-models"
    return build_presets("shop", store=Store(root / "models.duckdb"), out_dir=root, n_tasks=5, configs=TINY)


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    return tiny_models(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def chat_models(tmp_path_factory):
    """Tiny presets prompted with the whole conversation (no one-decision view): multi-turn rows."""
    from core.models import build_presets
    from core.store import Store

    root = tmp_path_factory.getbasetemp() / "chat-models"
    return build_presets("shop", store=Store(root / "models.duckdb"), out_dir=root, n_tasks=5, configs=TINY,
                         decision_history=None)


def fill_store(store, n_tasks: int = 3) -> None:
    """Expert + random exploration on a few shop tasks -> trees -> MCTS -> step, continuation and
    ETO-style pairs, all through the real modules."""
    from core.agents.scripted import ExpertPolicy, RandomPolicy
    from core.collect import collect
    from core.envs.base import make_env
    from core.mcts import run_mcts
    from core.pairs import eto_pairs, tree_pairs
    from core.tree import build_trees

    tids = [t.task_id for t in make_env("shop").tasks("train")[:n_tasks]]
    collect(store, "shop", ExpertPolicy("shop"), tids, model="expert", progress=False)
    collect(store, "shop", RandomPolicy(seed=1), tids, model="weak", progress=False, max_steps=4)
    trees = build_trees(store.trajectories(env="shop"))
    for g in trees:
        run_mcts(g, iterations=100)
    store.save_trees(trees)
    pairs = [p for g in trees for gran in ("step", "continuation") for p in tree_pairs(g, gran)]
    pairs += eto_pairs(store.trajectories(env="shop"), mode="weak")
    store.save_pairs(pairs)


@pytest.fixture(scope="session")
def filled_db(tmp_path_factory):
    """A store file filled once per session (fill_store); tests get a copy."""
    from core.store import Store

    path = tmp_path_factory.getbasetemp() / "filled.duckdb"
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
    ("dpo", "pairs:shop:trajectory", {}),
])
def test_trainer_changes_weights_and_registers_model(filled, models, kind, data, extra):
    from core.train import train

    if extra.get("ref"):
        extra = {"ref": str(models[extra["ref"]])}
    out = train(kind, cfg(kind, models, data, **extra), filled)
    before, after = weights(models["strong"]), weights(out)
    assert before.keys() == after.keys()
    assert len(changed(before, after)) >= len(before) // 2  # full fine-tuning moves (nearly) every tensor
    row = filled.models().set_index("name").loc[out.name]
    assert row["role"] == kind and row["base"] == "shop-strong" and row["job_id"]
    job = filled.query("SELECT * FROM jobs WHERE job_id = ?", [row["job_id"]]).iloc[0]
    assert job["status"] == "succeeded" and job["step"] == 2
    names = set(filled.query("SELECT DISTINCT name FROM metrics WHERE job_id = ?", [row["job_id"]])["name"])
    assert "loss" in names
    if kind in ("treedpo", "dpo"):
        assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= names


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
    from core.train.dpo import boundary_mask, build_dpo_trainer

    rows = build_rows("pairs:shop:continuation", filled)
    multi = [r for r in rows if len(r["chosen"]) > 1 and len(r["rejected"]) > 1]
    assert multi, "the fixture should give continuation pairs with observation turns"
    trainer, tok = build_dpo_trainer(cfg("treedpo", chat_models, "x"), multi[:2], tmp_path)
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


# -- configs ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,over,match", [
    ("sft", {"lr": -1e-5}, "lr"),
    ("sft", {"lr": float("nan")}, "lr"),
    ("treedpo", {"beta": 0.0}, "beta"),
    ("treedpo", {"loss_type": "nope"}, "loss_type"),
    ("sft", {"epochs": 0}, "epochs"),
    ("sft", {"model": "no-such-model"}, "no-such-model"),
    ("treedpo", {"ref": "/no/such/ref"}, "ref"),
    ("treedpo", {"data": "pairs:shop:step"}, "empty"),
    ("sft", {"data": "pairs:shop:step"}, "demonstrations"),
    ("treedpo", {"data": "expert:shop"}, "preference"),
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
    from core.cli.train import config_from_args
    from core.train import command_line, make_config

    paper, tiny = make_config("treedpo"), make_config("treedpo", "tiny")
    assert (paper.lr, paper.beta, paper.loss_type, paper.lora_r, paper.lora_alpha, paper.epochs) == (
        5e-6, 0.1, "sigmoid", 128, 256, 3.0)
    assert paper.batch_size * paper.grad_accum == 32
    assert make_config("sft").lr == 2e-5 and tiny.lr > 1e-4
    with pytest.raises(UserError, match="no field"):
        make_config("sft", beta=0.2)  # SFT has no beta
    c = make_config("treedpo", "tiny", model="m", data="pairs:shop:step", lora=True, beta=0.2, ref="w")
    line = command_line("treedpo", c)
    assert line.startswith("w2stree train treedpo --preset tiny") and "--beta 0.2" in line and "--lora" in line
    args = build_parser().parse_args(line.split()[1:])
    assert config_from_args("treedpo", args) == c
