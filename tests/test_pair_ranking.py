"""How a model ranks the stored pairs (core.pair_ranking): decision log-probabilities against a
forward pass by hand, sums over a continuation side's decisions, the report's ranking and DPO
reward accuracy, and the --hard-for filter (CLI and data spec). Local models on the CPU in fp32."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.agents.base import PAPER_SCHEDULE
from core.agents.prompt import DECISION_FLAG, decision_view, env_prefix, merge_user_turns, strip_one_shot
from core.cli import main
from core.models import build_local_models, load_model
from core.pair_ranking import PairScorer, decisions, ranking_summary
from core.stages import PairSettings, cut_pairs_stored, grow_trees_stored, run_policy, split_tasks
from core.store import Store
from core.train.data import build_rows

ENV = "shop"


def randomised(path, out, seed: int = 1) -> str:
    """The model at `path` with its matrices re-drawn at std 0.3 (an untrained preset gives nearly
    equal log-probabilities everywhere, which would make every comparison trivially true), saved
    with its tokenizer to `out`."""
    model, tok = load_model(str(path), device="cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A store with step and continuation pairs of three shop tasks (expert + random episodes),
    a one-decision model (`weak`, randomised), its untrained twin (`ref`) and a full-history model."""
    root = tmp_path_factory.mktemp("ranking")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("W2STREE_HOME", str(root))
        mp.setenv("W2STREE_DB", str(root / "w2stree.duckdb"))
        store = Store(root / "w2stree.duckdb")
        paths = build_local_models(ENV, store, out_dir=root / "models", n_tasks=10)
        full = build_local_models(ENV, store, out_dir=root / "full", n_tasks=10, decision_history=None)
        tasks = split_tasks(ENV, "train", 3)
        run_policy(store, ENV, "expert", tasks)
        run_policy(store, ENV, "random", tasks, schedule=PAPER_SCHEDULE)
        grow_trees_stored(store)
        ids = store.trees()["tree_id"].tolist()
        for gran in ("step", "continuation"):
            cut_pairs_stored(store, ids, PairSettings(gran, min_margin=0.0))
        yield {"store": store, "weak": randomised(paths["weak"], root / "weak-random"),
               "ref": str(paths["weak"]), "full": randomised(full["weak"], root / "full-random")}


def _by_hand(model_path: str, env: str, before, turn) -> float:
    """log π(turn | before) with one plain forward pass, prompted as the model's config says."""
    model, tok = load_model(model_path, device="cpu")
    k = getattr(model.config, DECISION_FLAG, None)
    msgs = [*env_prefix(env), *before]
    msgs = decision_view(msgs, int(k)) if k is not None else strip_one_shot(msgs)
    prompt = tok.apply_chat_template(merge_user_turns(msgs), add_generation_prompt=True, return_dict=True)["input_ids"]
    whole = tok.apply_chat_template(merge_user_turns([*msgs, turn]), return_dict=True)["input_ids"]
    assert whole[:len(prompt)] == prompt
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([whole])).logits[0].log_softmax(-1)
    return float(sum(logp[i - 1, whole[i]] for i in range(len(prompt), len(whole))))


@pytest.mark.slow
@pytest.mark.parametrize("which", ["weak", "full"])
def test_decision_log_prob_equals_a_forward_pass_by_hand(world, which):
    store = world["store"]
    pair = store.pairs(granularity="step")[0]
    scorer = PairScorer.load(world[which], device="cpu")
    got = scorer.pair_log_probs([pair])[0]
    for col, side in ((0, pair.chosen), (1, pair.rejected)):
        ((before, turn),) = decisions(pair.prompt, side)
        assert got[col] == pytest.approx(_by_hand(world[which], ENV, before, turn), abs=1e-4)


@pytest.mark.slow
def test_continuation_side_is_the_sum_of_its_decisions(world):
    store = world["store"]
    pairs = [p for p in store.pairs(granularity="continuation")
             if len(decisions(p.prompt, p.chosen)) >= 2 and len(decisions(p.prompt, p.rejected)) >= 2][:3]
    assert pairs, "the random episodes give continuation sides of several decisions"
    scorer = PairScorer.load(world["weak"], device="cpu")
    batched = scorer.pair_log_probs(pairs)  # every decision of the three pairs in shared batches
    for p, (c, r) in zip(pairs, batched):
        for value, side in ((c, p.chosen), (r, p.rejected)):
            one_by_one = [scorer.decision_log_probs(ENV, [item])[0] for item in decisions(p.prompt, side)]
            assert value == pytest.approx(sum(one_by_one), abs=1e-4)
    before, turn = decisions(pairs[0].prompt, pairs[0].chosen)[1]
    assert scorer.decision_log_probs(ENV, [(before, turn)])[0] == pytest.approx(
        _by_hand(world["weak"], ENV, before, turn), abs=1e-4)


def test_ranking_summary_by_hand():
    lp = np.array([[-1.0, -2.0], [-3.0, -3.0], [-5.0, -4.0], [-0.5, -9.0]])
    ref = np.array([[-1.0, -3.0], [-3.0, -4.0], [-6.0, -4.0], [-1.0, -2.0]])
    s = ranking_summary(lp, ref)
    assert (s["pairs"], s["right"], s["equal"], s["accuracy"]) == (4, 2, 1, 0.5)
    # rewards: (1 - 2), (0 - 1), (-1 + 2), (8.5 - 1) -> right for pairs 3 and 4
    assert (s["reward_right"], s["reward_equal"], s["reward_accuracy"]) == (2, 0, 0.5)
    assert s["mean_chosen"] == pytest.approx(-2.375)


@pytest.mark.slow
def test_report_ranking_and_hard_for(world, capsys):
    store = world["store"]
    db = str(store.path)
    pairs = store.pairs(granularity="step")
    lp = PairScorer.load(world["weak"], device="cpu").pair_log_probs(pairs)
    def key(p):
        return p.task_id, p.node_id, p.chosen_node, p.rejected_node

    wrong = {key(p) for p, (c, r) in zip(pairs, lp) if not c > r}
    assert 0 < len(wrong) < len(pairs), "the randomised model ranks some pairs right and some wrong"

    assert main(["--db", db, "oracle", "--report", "--format", "json", "--model", world["weak"],
                 "--ref", world["weak"]]) == 0
    ranking = {r["granularity"]: r for r in json.loads(capsys.readouterr().out)["ranking"]}
    assert ranking["step"]["pairs"] == len(pairs) and ranking["step"]["right"] == len(pairs) - len(wrong)
    # the model against itself: every implicit reward is 0, so none is right
    assert ranking["all"]["reward_right"] == 0 and ranking["all"]["reward_equal"] == ranking["all"]["pairs"]

    rows = build_rows(f"pairs:{ENV}:step?hard_for={world['weak']}", store)
    assert len(rows) == len(wrong)
    assert main(["--db", db, "pairs", "--min-margin", "0", "--hard-for", world["weak"]]) == 0
    assert f"ranks {len(wrong)} of the {len(pairs)} pairs cut wrong" in capsys.readouterr().out
    assert {key(p) for p in store.pairs(granularity="step")} == wrong  # re-cut, then only those kept


def test_hard_for_is_a_pairs_option_only(store):
    from core.errors import UserError
    from core.train.data import parse_spec

    assert parse_spec("pairs:shop:step?hard_for=models/x&min_margin=0.1").options == {
        "hard_for": "models/x", "min_margin": "0.1"}
    with pytest.raises(UserError, match="hard_for filters pairs"):
        parse_spec("expert:shop?hard_for=models/x")


def test_hard_for_an_unknown_model_stores_nothing_new(world, capsys):
    store = world["store"]
    before = sorted(p.pair_id for p in store.pairs())
    assert main(["--db", str(store.path), "pairs", "--hard-for", "no-such-model"]) == 2
    assert "no-such-model" in capsys.readouterr().err
    assert sorted(p.pair_id for p in store.pairs()) == before
