"""Reuse of finished units (core.reuse): a record holds only while inputs and outputs are unchanged."""

from __future__ import annotations

from pathlib import Path

from core import reuse
from core.agents.base import PAPER_SCHEDULE
from core.stages import run_policy
from core.train import make_config
from core.work import Unit


def _folder(path: Path, weights: bytes) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.safetensors").write_bytes(weights)
    (path / "config.json").write_text("{}")
    (path / "training_args.bin").write_bytes(weights[::-1])  # dates and paths: left out of digests
    return path


def _job(tmp_path: Path, lr: float = 1e-3) -> Unit:
    config = make_config("sft", "tiny", model=str(tmp_path / "base"), data=str(tmp_path / "rows.jsonl"),
                         output="out", lr=lr)
    return Unit("train X", kind="sft", config=config)


def test_content_digest_follows_content_not_trainer_arguments(tmp_path):
    a = reuse.content_digest(_folder(tmp_path / "a", b"w1"))
    (tmp_path / "a" / "training_args.bin").write_bytes(b"another date")
    assert reuse.content_digest(tmp_path / "a") == a
    assert reuse.content_digest(_folder(tmp_path / "b", b"w1")) == a  # same content, other place
    assert reuse.content_digest(_folder(tmp_path / "c", b"w2")) != a


def test_a_training_record_holds_until_an_input_or_the_output_changes(store, tmp_path):
    _folder(tmp_path / "base", b"base weights")
    (tmp_path / "rows.jsonl").write_text('{"messages": []}\n')
    unit = _job(tmp_path)
    assert reuse.lookup(unit, store) is None  # nothing ran yet
    unit.result = _folder(tmp_path / "out", b"trained")
    reuse.record(unit, store)
    assert reuse.lookup(_job(tmp_path), store) == tmp_path / "out"
    assert reuse.lookup(_job(tmp_path, lr=2e-3), store) is None  # another setting
    (tmp_path / "rows.jsonl").write_text('{"messages": [1]}\n')
    assert reuse.lookup(_job(tmp_path), store) is None  # other rows
    (tmp_path / "rows.jsonl").write_text('{"messages": []}\n')
    assert reuse.lookup(_job(tmp_path), store) == tmp_path / "out"
    _folder(tmp_path / "base", b"base weights, retrained under the same name")
    assert reuse.lookup(_job(tmp_path), store) is None
    _folder(tmp_path / "base", b"base weights")
    (tmp_path / "out" / "model.safetensors").write_bytes(b"overwritten by another run")
    assert reuse.lookup(_job(tmp_path), store) is None  # the recorded model is gone


def test_a_training_from_store_rows_is_never_reused(store, tmp_path):
    _folder(tmp_path / "base", b"base weights")
    config = make_config("sft", "tiny", model=str(tmp_path / "base"), data="successes:shop:m", output="o")
    assert reuse.unit_key(Unit("train Y", kind="sft", config=config), store) is None


def test_an_exploration_is_reused_only_while_its_finished_run_is_stored(store):
    def unit(seed: int = 0) -> Unit:
        return Unit("explore", stage=run_policy, reusable=True, kwargs=dict(
            env="shop", policy="noisy-expert", task_ids=["train_0", "train_1"], schedule=PAPER_SCHEDULE[:2],
            label="noisy-expert", seed=seed, max_steps=6))

    first = unit()
    first.result = run_policy(store, **first.kwargs)
    reuse.record(first, store)
    assert reuse.lookup(unit(), store) == first.result
    assert reuse.lookup(unit(seed=1), store) is None
    assert reuse.lookup(Unit("eval", stage=run_policy, kwargs=first.kwargs), store) is None  # not marked
    store.finish_run(first.result, "interrupted")
    assert reuse.lookup(unit(), store) is None
