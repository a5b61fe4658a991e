"""Local models for the embedded default: one tokenizer, a `weak` and a `strong` model.

Both models are Qwen2-style decoders built from scratch (random init, seeded), sharing the
environment's tokenizer (core.models.tokenizer), so TreeDPO can use the SFT weak model as the
reference of the strong one, as in the paper's W2S setting. Sizes: `weak` ≈ 0.4 M parameters,
`strong` ≈ 1.2 M (embeddings tied; the sizes were chosen from bench/learning_curve.py's measured
cost per step and success rates, see docs/experiments.md). They are saved under `<models_dir>/<env>-tokenizer`,
`<env>-weak`, `<env>-strong`, registered in the store under those names, and reused when present.

The context (`max_position_embeddings`, 2048) holds the shop ReAct prompt (system turn, one-shot
example, task) plus a full expert-length episode; tests/test_models.py measures it.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.agents.prompt import DECISION_FLAG, ONE_SHOT_FLAG
from core.envs import env_slug
from core.errors import UserError
from core.paths import models_dir
from core.store import Store

if TYPE_CHECKING:
    import torch

#: Model sizes by role (Qwen2Config keyword arguments). Override per call with `configs=`.
LOCAL_CONFIGS: dict[str, dict[str, Any]] = {
    "weak": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2),
    # 3.4x the weak model's parameters at ~3x its cost per step on CPU (bench/learning_curve.py);
    # the 6 M model this replaced cost 13x and could not be trained on enough rows in the budget
    "strong": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=3,
                   num_attention_heads=4, num_key_value_heads=2),
}
VOCAB_SIZE = 4096
CONTEXT = 2048
#: Previous actions in the one-decision prompt of the from-scratch local models
#: (`core.agents.prompt.DECISION_FLAG`): enough to see which options were already clicked.
DECISION_HISTORY = 4


def local_model_names(env: str) -> dict[str, str]:
    """Store names of an environment's local models, by role (an env's parameters become part of the
    name: `shop?n_products=200` -> `shop-n_products=200-weak`)."""
    return {role: f"{env_slug(env)}-{role}" for role in ("tokenizer", "weak", "strong")}


def count_params(model: torch.nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def saved_params(path: Path) -> int:
    """Parameters stored in a model folder's safetensors files (read from headers only)."""
    from safetensors import safe_open

    total = 0
    for f in sorted(Path(path).glob("*.safetensors")):
        with safe_open(f, framework="pt") as st:
            total += sum(math.prod(st.get_slice(key).get_shape()) for key in st.keys())  # noqa: SIM118 (safe_open has no __iter__)
    return total


def build_local_models(env: str, store: Store, force: bool = False, *,
                       out_dir: str | Path | None = None, n_tasks: int | None = None,
                       configs: dict[str, dict[str, Any]] | None = None,
                       vocab_size: int = VOCAB_SIZE, context: int = CONTEXT, seed: int = 0,
                       decision_history: int | None = DECISION_HISTORY) -> dict[str, Path]:
    """Build (or reuse) the tokenizer, weak and strong local models of `env`; returns their folders by role.

    `out_dir` defaults to `core.paths.models_dir()`; `n_tasks` limits the expert episodes the
    tokenizer is trained on (all train tasks when None); `force` rebuilds everything;
    `decision_history` is the models' one-decision prompt (`DECISION_FLAG`: k previous actions),
    None for the full conversation (the paper's layout). Each model
    is registered in `store` with its role and parameter count.
    """
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from core.models.tokenizer import train_env_tokenizer  # transformers: only when models are built

    root = Path(out_dir) if out_dir is not None else models_dir()
    names = local_model_names(env)
    paths = {role: root / name for role, name in names.items()}
    sizes = {**LOCAL_CONFIGS, **(configs or {})}

    tok_dir = paths["tokenizer"]
    if force or not (tok_dir / "tokenizer.json").exists():
        _clear(tok_dir)
        tokenizer = train_env_tokenizer(env, n_tasks, vocab_size=vocab_size, model_max_length=context)
        tokenizer.save_pretrained(tok_dir)
        force = True  # new token ids: models built on an old tokenizer are stale
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)

    params: dict[str, int] = {"tokenizer": 0}
    for role in ("weak", "strong"):
        path = paths[role]
        if not force and _current(path, decision_history, sizes[role]):
            params[role] = saved_params(path)
            continue
        _clear(path)
        config = Qwen2Config(
            vocab_size=len(tokenizer), max_position_embeddings=context, tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, **sizes[role],
            # from-scratch models are prompted one decision at a time, without the one-shot example
            **{ONE_SHOT_FLAG: False, DECISION_FLAG: decision_history},
        )
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
            torch.manual_seed(seed + (0 if role == "weak" else 1))
            model = Qwen2ForCausalLM(config)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        params[role] = count_params(model)

    for role, name in names.items():
        store.register_model(name, str(paths[role]), role=role, params=params[role],
                             data=f"{env} (built locally)")
    return paths


def _current(path: Path, decision_history: int | None, size: dict[str, Any]) -> bool:
    """Whether a saved local model exists with the wanted size and prompt layout (any other is rebuilt:
    local models are untrained, so nothing is lost)."""
    import json

    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return (DECISION_FLAG in config and config[DECISION_FLAG] == decision_history
            and all(config.get(k) == v for k, v in size.items()))


def _clear(path: Path) -> None:
    """Remove a stale local model folder (only ever one of ours, under the models folder)."""
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{path} exists and is not a folder; move it away and rebuild")
        shutil.rmtree(path)
