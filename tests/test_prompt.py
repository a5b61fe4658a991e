"""The ReAct prompt format: reply parsing and the one-shot switch of from-scratch models."""

from types import SimpleNamespace

import pytest

from core.agents.prompt import (
    DECISION_COLUMNS,
    DECISION_FLAG,
    ONE_SHOT_FLAG,
    decision_rows,
    decision_view,
    env_prefix,
    merge_user_turns,
    parse_reply,
    strip_one_shot,
)
from core.train.common import fit_prompts


def test_parse_reply_tolerates_a_missing_thought_and_flags_no_action():
    assert parse_reply("Thought: look\nAction: search[red mug]") == ("look", "search[red mug]")
    assert parse_reply("click[buy now]") == ("", "click[buy now]")
    assert parse_reply("Thought: hmm\nno idea\n")[1] is None


@pytest.mark.parametrize("env", ["shop", "sciworld"])
def test_strip_one_shot_keeps_role_and_task_and_drops_the_example(env):
    prefix = env_prefix(env)
    assert len(prefix) > 4  # role, OK, example task, example turns
    task = [{"role": "user", "content": "TASK"}, {"role": "assistant", "content": "Action: a"},
            {"role": "user", "content": "Observation: o"}]
    out = strip_one_shot(prefix + task)
    assert out == prefix[:2] + task
    assert strip_one_shot(out) == out  # no example left: unchanged


def test_fit_prompts_follows_the_model_flag():
    rows = [{"prompt": env_prefix("shop") + [{"role": "user", "content": "T"}],
             "completion": [{"role": "assistant", "content": "Action: x"}]}]
    keep = SimpleNamespace(config=SimpleNamespace())
    drop = SimpleNamespace(config=SimpleNamespace(**{ONE_SHOT_FLAG: False}))
    # the full prompt keeps the example; its last observation and the task become one user turn
    assert fit_prompts(keep, rows) == [{**rows[0], "prompt": merge_user_turns(rows[0]["prompt"])}]
    assert fit_prompts(keep, rows)[0]["prompt"][-1]["content"].endswith("\n\nT")
    (row,) = fit_prompts(drop, rows)
    assert [m["content"] for m in row["prompt"][2:]] == ["T"]
    assert row["completion"] == rows[0]["completion"]


def _episode() -> list[dict[str, str]]:
    """A shop-like conversation: prefix, task message, two steps, ending on an observation."""
    return [*env_prefix("shop"),
            {"role": "user", "content": "buy a red mug\nObservation: search page"},
            {"role": "assistant", "content": "Thought: search it\nAction: search[red mug]"},
            {"role": "user", "content": "Observation: results B01"},
            {"role": "assistant", "content": "Thought: open it\nAction: click[B01]"},
            {"role": "user", "content": "Observation: item page"}]


def test_decision_view_keeps_instruction_last_k_actions_and_current_observation():
    msgs = _episode()
    (turn,) = decision_view(msgs, 1)
    assert turn == {"role": "user", "content": "buy a red mug\nPrevious actions: click[B01]\nObservation: item page"}
    assert decision_view(msgs, 4)[0]["content"].splitlines()[1] == "Previous actions: search[red mug] | click[B01]"
    assert decision_view(msgs, 0)[0]["content"] == "buy a red mug\nObservation: item page"
    # the first decision sees the task's own first observation and no action line
    assert decision_view(msgs[:len(msgs) - 4], 4)[0]["content"] == "buy a red mug\nObservation: search page"


def test_decision_rows_are_what_the_policy_sees_at_each_step():
    msgs = _episode()
    task_at = len(env_prefix("shop"))
    sft = {"prompt": msgs[:task_at + 1], "completion": msgs[task_at + 1:-1]}
    rows = decision_rows([sft], 4)
    assert [r["completion"][0]["content"] for r in rows] == [msgs[task_at + 1]["content"], msgs[task_at + 3]["content"]]
    # row i's prompt is exactly the rollout prompt before step i
    assert rows[1]["prompt"] == decision_view(msgs[:task_at + 3], 4)
    # a multi-turn preference pair becomes its first diverging assistant turn, the shared turns in the prompt
    a = {"role": "assistant", "content": "Action: click[B01]"}
    obs = {"role": "user", "content": "Observation: item page"}
    pref = {"prompt": msgs[:task_at + 3], "chosen": [a, obs, {"role": "assistant", "content": "Action: click[buy now]"}],
            "rejected": [a, obs, {"role": "assistant", "content": "Action: click[< prev]"}]}
    (p,) = decision_rows([pref], 4)
    assert p == {"prompt": decision_view([*pref["prompt"], a, obs], 4), "chosen": [pref["chosen"][2]],
                 "rejected": [pref["rejected"][2]]}  # one decision a side: exactly TRL's row, no extra columns
    assert p["prompt"][0]["content"].endswith("click[B01]\nObservation: item page")
    # sides that never differ in an assistant turn give no pair
    assert decision_rows([{**pref, "rejected": pref["chosen"]}], 4) == []


def test_continuation_rows_keep_every_decision_of_each_side():
    """A continuation pair with several decisions a side keeps them all, each with the prompt the
    policy sees at that point of that side's rollout (the shared turns as history)."""
    msgs = _episode()
    task_at = len(env_prefix("shop"))
    turn = lambda text: {"role": "assistant", "content": text}  # noqa: E731
    obs = lambda text: {"role": "user", "content": f"Observation: {text}"}  # noqa: E731
    shared = [turn("Action: search[red mug]"), obs("results B01 B02")]
    chosen = [*shared, turn("Thought: red\nAction: click[B01]"), obs("item B01"), turn("Action: click[buy now]")]
    rejected = [*shared, turn("Action: click[B02]"), obs("item B02"), turn("Action: click[< prev]"),
                obs("results B01 B02"), turn("Action: click[B02]")]
    pref = {"prompt": msgs[:task_at + 1], "chosen": chosen, "rejected": rejected}
    (p,) = decision_rows([pref], 1)
    got = {col: [(d["prompt"][0]["content"], d["completion"][0]["content"]) for d in p[col]] for col in DECISION_COLUMNS}
    assert got == {
        "chosen_decisions": [
            ("buy a red mug\nPrevious actions: search[red mug]\nObservation: results B01 B02", chosen[2]["content"]),
            ("buy a red mug\nPrevious actions: click[B01]\nObservation: item B01", "Action: click[buy now]")],
        "rejected_decisions": [
            ("buy a red mug\nPrevious actions: search[red mug]\nObservation: results B01 B02", "Action: click[B02]"),
            ("buy a red mug\nPrevious actions: click[B02]\nObservation: item B02", "Action: click[< prev]"),
            ("buy a red mug\nPrevious actions: click[< prev]\nObservation: results B01 B02", "Action: click[B02]")]}
    # each decision's prompt is exactly the rollout prompt of that side before it
    assert p["rejected_decisions"][2]["prompt"] == decision_view([*pref["prompt"], *rejected[:-1]], 1)
    # and the row is still TRL's row of the first diverging decisions
    assert (p["prompt"], p["chosen"], p["rejected"]) == (
        p["chosen_decisions"][0]["prompt"], [chosen[2]], [rejected[2]])
    # one side with several decisions is enough to keep them
    (q,) = decision_rows([{**pref, "chosen": chosen[:3]}], 1)
    assert [len(q[c]) for c in DECISION_COLUMNS] == [1, 3]


def test_fit_prompts_converts_rows_for_decision_models():
    msgs = _episode()
    task_at = len(env_prefix("shop"))
    rows = [{"prompt": msgs[:task_at + 1], "completion": msgs[task_at + 1:-1]}]
    model = SimpleNamespace(config=SimpleNamespace(**{ONE_SHOT_FLAG: False, DECISION_FLAG: 2}))
    assert fit_prompts(model, rows) == decision_rows(rows, 2)
