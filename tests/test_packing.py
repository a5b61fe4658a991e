"""Packed preference sequences (`core.train.packing`): layouts, masks and position ids checked by
hand on small id lists; then, on the tiny models in fp32, packed log-probabilities, loss and
gradient against TRL's unpacked computation (`core.train.packed_dpo`)."""

from __future__ import annotations

import pytest
import torch
from test_train import cfg, chat_models, filled, filled_db, models  # noqa: F401 (fixtures, shared with test_train)

from core.train.data import build_rows
from core.train.dpo import build_dpo_trainer
from core.train.packing import Scored, pack, pair_sequences, parent_states, per_side, scored_targets


def mask_rows(packing, r: int = 0) -> list[list[int]]:
    """Each position's visible positions, from the 4-D mask."""
    m = packing.attention_mask[r, 0]
    return [torch.nonzero(m[i]).flatten().tolist() for i in range(m.shape[0])]


def test_pair_packing_lays_out_prompt_chosen_rejected():
    seqs = pair_sequences([5, 6, 7], [8, 9], [10, 11, 12], pair=0, n_pairs=1)
    p = pack(seqs, n_sides=2, mode="pair", pad_id=0)
    assert p.input_ids.tolist() == [[5, 6, 7, 8, 9, 10, 11, 12]]
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 4, 3, 4, 5]]  # rejected restarts at the prompt's end
    assert mask_rows(p) == [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3, 4],
                            [0, 1, 2, 5], [0, 1, 2, 5, 6], [0, 1, 2, 5, 6, 7]]  # rejected never sees chosen
    assert p.scored_node.tolist() == [3, 4, 5, 6, 7]
    assert p.scored_parent.tolist() == [2, 3, 2, 5, 6]  # the first rejected token is read off the prompt's end
    assert p.side_index.tolist() == [[0, 1, 0], [2, 3, 4]]
    assert p.side_mask.tolist() == [[True, True, False], [True, True, True]]
    assert p.tokens == 8  # unpacked: 5 + 6 = 11


def test_pair_packing_keeps_pairs_apart_and_honours_loss_masks():
    seqs = (pair_sequences([1, 2], [3, 4, 5], [6], 0, 2, chosen_mask=[1, 0, 1])
            + pair_sequences([1, 2], [7], [8], 1, 2))
    p = pack(seqs, n_sides=4, mode="pair", pad_id=99)
    assert p.input_ids.tolist() == [[1, 2, 3, 4, 5, 6], [1, 2, 7, 8, 99, 99]]
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 4, 2], [0, 1, 2, 2, 0, 0]]
    assert p.valid.tolist() == [[True] * 6, [True] * 4 + [False] * 2]
    assert mask_rows(p, 1) == [[0], [0, 1], [0, 1, 2], [0, 1, 3], [4], [5]]  # padding sees itself only
    # side 0 scores 3 and 5 (4 is masked out, like an observation token), flat indices row * 6 + node
    assert [p.scored_node[t].item() for t in p.side_index[0][p.side_mask[0]]] == [2, 4]
    assert [p.scored_node[t].item() for t in p.side_index[1][p.side_mask[1]]] == [6 + 2]
    assert [p.scored_parent[t].item() for t in p.side_index[3][p.side_mask[3]]] == [6 + 1]


def tree_example() -> list[Scored]:
    """Pair A at a node (prompt 1 2, chosen 3 4, rejected 5) and pair B one step further along A's
    chosen path (prompt 1 2 3, chosen 4 6, rejected 7): B's prompt holds A's chosen 3, and its
    chosen starts with A's chosen 4."""
    return pair_sequences([1, 2], [3, 4], [5], 0, 2) + pair_sequences([1, 2, 3], [4, 6], [7], 1, 2)


def test_tree_packing_shares_every_prefix_once():
    p = pack(tree_example(), n_sides=4, mode="tree", budget=64)
    assert p.input_ids.tolist() == [[1, 2, 3, 4, 5, 6, 7]]  # 7 positions for 4 sequences of 13 tokens
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 2, 4, 3]]
    assert mask_rows(p) == [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3], [0, 1, 4], [0, 1, 2, 3, 5], [0, 1, 2, 6]]
    assert p.scored_node.tolist() == [2, 3, 4, 5, 6]
    assert p.scored_parent.tolist() == [1, 2, 1, 3, 2]
    # sides: A chosen, B chosen, A rejected, B rejected; token 4 (t = 1) is scored by both chosen sides
    assert p.side_index.tolist() == [[0, 1], [1, 3], [2, 0], [4, 0]]
    assert p.side_mask.tolist() == [[True, True], [True, True], [True, False], [True, False]]


def test_tree_packing_starts_a_row_when_a_pair_overflows_the_budget():
    p = pack(tree_example(), n_sides=4, mode="tree", budget=6)  # A takes 5 positions, B would add 2
    assert p.input_ids.tolist() == [[1, 2, 3, 4, 5, 0], [1, 2, 3, 4, 6, 7]]
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 2, 0], [0, 1, 2, 3, 4, 3]]
    assert p.scored_node.tolist() == [2, 3, 4, 6 + 3, 6 + 4, 6 + 5]
    assert p.scored_parent.tolist() == [1, 2, 1, 6 + 2, 6 + 3, 6 + 2]
    assert p.side_index.tolist() == [[0, 1], [3, 4], [2, 0], [5, 0]]
    assert pack(tree_example(), n_sides=4, mode="tree", budget=2).input_ids.shape[0] == 4  # each over it
    assert pack(tree_example(), n_sides=4, mode="tree").input_ids.shape[0] == 1  # default: 2 x 5 positions
    assert pack(tree_example(), n_sides=4, mode="pair", budget=4).input_ids.tolist() == [
        [1, 2, 3, 4, 0], [1, 2, 5, 0, 0], [1, 2, 3, 4, 6], [1, 2, 3, 7, 0]]  # a pair's rows split over the budget


def test_log_probs_come_from_the_parent_position_and_gather_per_side():
    p = pack(tree_example(), n_sides=4, mode="tree", budget=64)
    logits = torch.randn(1, 7, 10)
    logp = parent_states(logits, p).log_softmax(-1).gather(-1, scored_targets(p)[:, None]).squeeze(-1)
    full = logits[0].log_softmax(-1)
    # node 6 (token 7) is predicted by node 2 (token 3), not by node 5 before it in the row
    assert torch.allclose(logp, torch.stack([full[1, 3], full[2, 4], full[1, 5], full[3, 6], full[2, 7]]))
    sides = per_side(logp, p)
    assert torch.equal(sides[1], torch.stack([full[2, 4], full[3, 6]]))
    assert torch.equal(sides[2], torch.stack([full[1, 5], torch.tensor(0.0)]))
    assert per_side(logp > -100, p).tolist()[3] == [True, False]


# -- exactness against TRL on the tiny models (fp32) -----------------------------------------------------

def run_batch(trainer) -> dict:
    """TRL's loss on one batch of the trainer's whole dataset: loss, gradient, metrics, the
    policy's per-side log-probabilities (chosen sides then rejected) and TRL's token count."""
    model = trainer.model.train()
    model.zero_grad()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    trainer._metrics["train"].clear()
    seen = []
    hook = model.register_forward_hook(lambda _m, _i, out: seen.append(out.log_probs.detach().sum(1)))
    try:
        loss = trainer.compute_loss(model, batch)
    finally:
        hook.remove()
    loss.backward()
    return {"loss": float(loss.detach()), "logps": seen[0], "tokens": trainer._total_train_tokens,
            "grads": {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None},
            "metrics": {k: v[-1] for k, v in trainer._metrics["train"].items() if k != "num_tokens"}}


@pytest.mark.parametrize("gran,attn,prompts", [
    ("step", "sdpa", "chat_models"), ("continuation", "sdpa", "chat_models"), ("continuation", "eager", "chat_models"),
    ("trajectory", "sdpa", "chat_models"), ("continuation", "sdpa", "models")])
def test_packed_logps_loss_and_gradient_equal_trls(filled, request, tmp_path, gran, attn, prompts):  # noqa: F811
    """`pair` and `tree` give the unpacked per-pair log-probabilities, loss, gradient and metrics
    within 1e-5, on fewer tokens: TRL's with full-history prompts (`chat_models`), the decision
    sums of `DecisionDPOTrainer` with the one-decision prompt (`models`: k decisions a side)."""
    family = request.getfixturevalue(prompts)
    rows = build_rows(f"pairs:shop:{gran}", filled)[:8]
    kind = "eto-dpo" if gran == "trajectory" else "treedpo"
    got = {}
    for packing in ("none", "pair", "tree"):
        conf = cfg(kind, family, "x", ref=str(family["weak"]), packing=packing)
        trainer, _ = build_dpo_trainer(conf, rows, tmp_path / packing)
        for m in (trainer.model, trainer.ref_model):
            m.config._attn_implementation = attn
        got[packing] = run_batch(trainer)
    want = got["none"]
    assert len(want["logps"]) == 2 * len(rows) and want["loss"] != pytest.approx(0.6931, abs=1e-3)
    for packing in ("pair", "tree"):
        have = got[packing]
        torch.testing.assert_close(have["logps"], want["logps"], rtol=1e-5, atol=0)
        assert have["loss"] == pytest.approx(want["loss"], rel=1e-5)
        assert have["grads"].keys() == want["grads"].keys()
        for k, g in want["grads"].items():
            torch.testing.assert_close(have["grads"][k], g, rtol=1e-5, atol=1e-5 * float(g.abs().max()))
        # rewards and margins are differences of log-probabilities of size L: their rounding is ~1e-7 L
        scale = float(want["logps"].abs().max())
        for k, v in want["metrics"].items():
            assert have["metrics"][k] == pytest.approx(v, rel=1e-5, abs=1e-6 * scale), (packing, k)
    assert got["tree"]["tokens"] <= got["pair"]["tokens"] < want["tokens"]


def test_a_model_whose_attention_takes_no_4d_mask_is_refused(filled, chat_models, tmp_path, monkeypatch):  # noqa: F811
    from core.errors import UserError
    from core.train import common, packed_dpo

    load = common.load_policy

    def flash(name, conf, frozen=False):
        model, tok = load(name, conf, frozen)
        model.config._attn_implementation = "flash_attention_2"
        return model, tok

    monkeypatch.setattr("core.train.dpo.load_policy", flash)
    conf = cfg("treedpo", chat_models, "x", packing="tree")
    with pytest.raises(UserError, match=r"--packing tree needs attention that takes a 4-D mask \(sdpa or eager\); "
                                        r"model .*strong.* uses flash_attention_2: use --packing none"):
        build_dpo_trainer(conf, build_rows("pairs:shop:step", filled)[:2], tmp_path)
    assert packed_dpo.ATTENTIONS == ("sdpa", "eager")


def test_packing_is_a_typed_config_field_and_a_command_line_flag():
    from core.cli import build_parser
    from core.cli.train import command_line, config_from_args
    from core.errors import UserError
    from core.train import make_config
    from core.train.config import validate_fields

    # the paper preset keeps TRL's computation (unmeasured on a GPU); the tiny one packs trees
    assert make_config("treedpo").packing == "none" and make_config("eto-dpo", "tiny").packing == "tree"
    with pytest.raises(UserError, match=r"treedpo: packing='trie' is invalid; use one of none, pair, tree"):
        validate_fields("treedpo", make_config("treedpo", model="m", data="pairs:shop:step", packing="trie"))
    c = make_config("eto-dpo", "tiny", model="m", data="pairs:shop:trajectory", packing="pair")
    line = command_line("eto-dpo", c)
    assert "--packing pair" in line  # the command line names what differs from the preset
    assert config_from_args("eto-dpo", build_parser().parse_args(line.split()[1:])) == c


@pytest.mark.slow
@pytest.mark.parametrize("extra", [{}, {"lora": True, "lr": 1e-2}])
def test_training_with_tree_packing_ends_at_the_same_weights(filled, chat_models, tmp_path, extra):  # noqa: F811
    """Three optimizer steps on continuation pairs from the same seed: `tree` ends within fp32
    rounding of `none`, and the weights moved (all of them, or the LoRA adapter: the reference is
    then the base with the adapter off, through the same packed forward)."""
    rows = build_rows("pairs:shop:continuation", filled)
    ends = {}
    for packing in ("none", "tree"):
        conf = cfg("treedpo", chat_models, "x", packing=packing, max_steps=3, batch_size=4, micro_batch=2, **extra)
        trainer, _ = build_dpo_trainer(conf, rows, tmp_path / packing)
        start = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
        trainer.train()
        ends[packing] = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    assert any(not torch.equal(start[k], ends["none"][k]) for k in start)
    for k, w in ends["none"].items():
        torch.testing.assert_close(ends["tree"][k], w, rtol=1e-4, atol=1e-6)
