"""The ReAct prompt format: reply parsing and the one-shot switch of from-scratch models."""

from types import SimpleNamespace

import pytest

from core.agents.prompt import ONE_SHOT_FLAG, env_prefix, merge_user_turns, parse_reply, strip_one_shot
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
