"""Local models, tokenizer, chat template and loading (core.models)."""

from __future__ import annotations

import json
import time
import warnings

import pytest
import torch

from core.agents.prompt import env_prefix, step_messages, task_message
from core.envs.base import make_env
from core.errors import UserError
from core.models import build_local_models, count_params, load_model, model_name, resolve_model
from core.models.local import CONTEXT
from core.store import Store
from core.trajectory import Step


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Presets built once for this module (tokenizer on 20 expert episodes + the catalogue); the
    default store points into the same temporary folder, never at the checkout's data/."""
    root = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("W2STREE_HOME", str(root))
        mp.setenv("W2STREE_DB", str(root / "w2stree.duckdb"))
        store = Store(root / "w2stree.duckdb")
        yield store, build_local_models("shop", store, out_dir=root / "models", n_tasks=20)


def _expert_chat(task_id: str = "test_0") -> list[dict[str, str]]:
    env = make_env("shop")
    obs, instruction = env.reset(task_id)
    steps = []
    for ex in env.expert(task_id):
        res = env.step(ex.action)
        steps.append(Step(action=ex.action, observation=res.observation, thought=ex.thought))
    return env_prefix("shop") + [{"role": "user", "content": task_message(instruction, obs)}] \
        + step_messages(steps, final_observation=False)


def test_tokenizer_round_trips_actions_and_observations(built):
    _, paths = built
    _, tok = load_model(str(paths["weak"]))
    env = make_env("shop")
    obs, _ = env.reset("test_3")
    res = env.step("search[red cotton shirt size 3xl, under $40.00]")
    for text in ("click[b0g0n1flxg]", "search[waterproof padded dog collar]", obs, res.observation,
                 "Thought: unseen wörds ünd émoji 🛒\nAction: click[Buy Now]"):
        ids = tok(text)["input_ids"]
        assert tok.decode(ids) == text
        assert tok.unk_token_id is None or tok.unk_token_id not in ids
    # digits are single tokens: a price never becomes an opaque merged token
    assert len(tok("40.00")["input_ids"]) == 5
    # a catalogue id is one token, the same one on the results page and in the click that copies it
    asin = env.catalog.products[0].asin
    page, click = tok.tokenize(f"[SEP] {asin} [SEP]"), tok.tokenize(f"click[{asin}]")
    assert asin in page and click == ["click", "[", asin, "]"]


def test_assistant_mask_covers_exactly_the_assistant_turns(built):
    _, paths = built
    _, tok = load_model(str(paths["weak"]))
    chat = _expert_chat()
    enc = tok.apply_chat_template(chat, return_assistant_tokens_mask=True, return_dict=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    spans, cur = [], []
    for i, m in zip(ids, mask):
        if m:
            cur.append(i)
        elif cur:
            spans.append(cur)
            cur = []
    if cur:
        spans.append(cur)
    expected = [m["content"] + tok.eos_token for m in chat if m["role"] == "assistant"]
    assert [tok.decode(s) for s in spans] == expected
    # the generation prompt opens an assistant turn and nothing else
    prompt = tok.apply_chat_template(chat[:5], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_param_counts_context_and_registration(built):
    store, paths = built
    weak, _ = load_model(str(paths["weak"]))
    strong, tok = load_model(str(paths["strong"]))
    assert 200_000 <= count_params(weak) <= 1_000_000
    assert 1_000_000 <= count_params(strong) <= 2_000_000  # sized from bench/learning_curve.py
    assert count_params(strong) >= 2.5 * count_params(weak)
    assert weak.config.vocab_size == strong.config.vocab_size == len(tok)
    # the context holds a whole expert episode of the test split plus a reply
    longest = max(len(tok.apply_chat_template(_expert_chat(f"test_{i}"))["input_ids"]) for i in range(10))
    assert longest + 64 <= CONTEXT == strong.config.max_position_embeddings
    models = store.models().set_index("name")
    assert models.loc["shop-weak", "role"] == "weak"
    assert models.loc["shop-strong", "params"] == count_params(strong)
    assert models.loc["shop-tokenizer", "path"] == str(paths["tokenizer"])


def test_build_local_models_reuses_existing_folders(built):
    store, paths = built
    stamp = (paths["strong"] / "model.safetensors").stat().st_mtime_ns
    again = build_local_models("shop", store, out_dir=paths["weak"].parent, n_tasks=20)
    assert again == paths
    assert (paths["strong"] / "model.safetensors").stat().st_mtime_ns == stamp


def test_save_load_round_trip_gives_identical_logits(built, tmp_path):
    store, paths = built
    model, tok = load_model("shop-weak", store=store)  # by registered name
    assert model_name(str(paths["weak"]), store) == "shop-weak"
    ids = torch.tensor([tok("search[blue dog collar]")["input_ids"]])
    with torch.no_grad():
        before = model(ids).logits
    model.save_pretrained(tmp_path / "copy")
    tok.save_pretrained(tmp_path / "copy")
    again, _ = load_model(str(tmp_path / "copy"))
    with torch.no_grad():
        assert torch.equal(before, again(ids).logits)
    assert not again.training and again.dtype == torch.float32


def test_lora_adapter_loads_on_its_base(built, tmp_path):
    from peft import LoraConfig, get_peft_model

    _, paths = built
    base, tok = load_model(str(paths["weak"]))
    ids = torch.tensor([tok("click[buy now]")["input_ids"]])
    with torch.no_grad():
        base_logits = base(ids).logits
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # LoRA B starts at zero: make the adapter actually change something
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
        adapted = peft_model(ids).logits
    peft_model.save_pretrained(tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert not torch.allclose(adapted, base_logits)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        loaded = [load_model(str(paths["weak"]), adapter=str(tmp_path / "adapter")),
                  load_model(str(tmp_path / "adapter"), merge=True)]  # base from adapter_config
    # PEFT reads transformers' deprecated `is_gradient_checkpointing` as it wraps: not the user's to fix
    assert not [w for w in seen if "is_gradient_checkpointing" in str(w.message)]
    for model, _ in loaded:
        with torch.no_grad():
            torch.testing.assert_close(model(ids).logits, adapted, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["./no/such/model", "/nonexistent/model-dir",
                                  "no-such-org/no-such-model-xyz", "bad id with spaces"])
def test_missing_model_fails_at_once_with_one_clear_error(name, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # offline is the default, not opt-in
    monkeypatch.setenv("W2STREE_DB", str(tmp_path / "none.duckdb"))
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        load_model(name)
    elapsed = time.monotonic() - start
    msg = str(err.value)
    assert name in msg and "w2stree models build" in msg and "\n" not in msg
    assert elapsed < 10, f"{elapsed:.1f}s: the offline miss must not retry"
    assert not (tmp_path / "none.duckdb").exists()  # a name lookup never creates a store


def test_registered_model_whose_folder_is_gone(store, tmp_path):
    store.register_model("ghost", str(tmp_path / "gone"), role="weak")
    with pytest.raises(UserError, match="ghost"):
        resolve_model("ghost", store)


def test_models_cli_lists_registered_models(built, tmp_path, capsys):
    from core.cli import main

    store, _ = built
    assert main(["--db", str(store.path), "models", "list"]) == 0
    out = capsys.readouterr().out
    assert "shop-weak" in out and "shop-strong" in out and "tokenizer" in out
    assert main(["--db", str(tmp_path / "x.duckdb"), "models", "import-smollm",
                 "--gguf", str(tmp_path / "missing.gguf")]) == 2
