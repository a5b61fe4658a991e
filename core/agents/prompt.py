"""The ReAct chat format shared by collection, training, import and export.

A conversation is a list of `{"role": "user"|"assistant", "content": str}` messages:

    user       <env system prompt>             \
    assistant  OK                               |  prefix: role, then a one-shot example
    user       <example task message>           |  written from an expert episode
    assistant  Thought: ...\nAction: ...        |
    user       Observation: ...                /
    user       <task message>                  <- the task: instruction (+ first observation)
    assistant  Thought: ...\nAction: ...
    user       Observation: ...
    ...

This is the layout of ETO / the paper's reference; the ETO importers and exporters map it 1:1
to `{"from": "human"|"gpt", "value"}` turns.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from core.envs.base import env_class
from core.trajectory import Step

Message = dict[str, str]

_ACTION_RE = re.compile(r"^\s*action\s*:\s*(.*)$", re.IGNORECASE | re.MULTILINE)
_THOUGHT_RE = re.compile(r"^\s*thought\s*:\s*(.*?)(?=^\s*action\s*:|\Z)", re.IGNORECASE | re.MULTILINE | re.DOTALL)


def format_assistant(thought: str, action: str) -> str:
    """One assistant turn in the ReAct format."""
    return f"Thought: {thought}\nAction: {action}" if thought else f"Action: {action}"


def format_observation(observation: str) -> str:
    return f"Observation: {observation}"


def task_message(instruction: str, initial_observation: str = "") -> str:
    """The user turn that starts a task."""
    if initial_observation:
        return f"{instruction}\n{format_observation(initial_observation)}"
    return instruction


def parse_reply(text: str) -> tuple[str, str | None]:
    """Split a model reply into (thought, action). The thought may be missing; the action is
    None when no `Action:` line (or bare single line) can be found."""
    m = _ACTION_RE.search(text)
    if m:
        action = m.group(1).strip()
        t = _THOUGHT_RE.search(text)
        thought = t.group(1).strip() if t else text[: m.start()].strip()
        return thought, (action or None)
    t = _THOUGHT_RE.search(text)
    if t:  # a thought with no action
        return t.group(1).strip(), None
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if len(lines) == 1:  # a bare action, as small models often answer
        return "", lines[0]
    return text.strip(), None


def step_messages(steps: Sequence[Step], final_observation: bool = True) -> list[Message]:
    """Alternating assistant/observation turns for steps (the last observation optional)."""
    out: list[Message] = []
    for i, s in enumerate(steps):
        out.append({"role": "assistant", "content": format_assistant(s.thought, s.action)})
        if final_observation or i < len(steps) - 1:
            out.append({"role": "user", "content": format_observation(s.observation)})
    return out


def prefix_messages(system_prompt: str, example_instruction: str,
                    example_steps: Sequence[Step]) -> list[Message]:
    """The system turn, "OK", then the one-shot example."""
    msgs: list[Message] = [
        {"role": "user", "content": system_prompt},
        {"role": "assistant", "content": "OK"},
    ]
    if example_instruction:
        msgs.append({"role": "user", "content": example_instruction})
        msgs.extend(step_messages(example_steps))
    return msgs


#: A model's config attribute saying whether it is prompted with the one-shot example (default
#: True). From-scratch local models set it False: they cannot learn in context, and the example is
#: most of every prompt (about 1k of 1.7k tokens in the shop) and gets copied verbatim.
ONE_SHOT_FLAG = "w2stree_one_shot"


def strip_one_shot(messages: list[Message]) -> list[Message]:
    """The conversation without its one-shot example: keeps the system turn and "OK", drops the
    example's task message and turns up to the real task message. The boundary is structural (the
    example ends with an observation turn directly followed by the task message), so it works
    on any env's prefix and on training rows alike; a conversation with no example is returned
    unchanged."""
    if len(messages) < 3 or messages[1]["role"] != "assistant":
        return list(messages)
    for i in range(2, len(messages) - 1):
        if messages[i]["role"] == "user" and messages[i + 1]["role"] == "user":
            return [*messages[:2], *messages[i + 1:]]
    return list(messages)


#: A model's config attribute: when set to k (an int >= 0) the model is prompted one decision at a
#: time (`decision_view`): a single user turn holding the task instruction, the last k actions and
#: the current observation, instead of the whole conversation. The from-scratch local models use it:
#: whole episodes drown the few tokens of each decision in template text (a 0.36 M model trained
#: on them ignored the instruction), and the prompt stays short at every step. Training rows are
#: converted to the same view (`decision_rows`), so training and rollout see identical prompts.
DECISION_FLAG = "w2stree_decision_history"


def _task_index(messages: Sequence[Message]) -> int:
    """Index of the task message in a conversation without its one-shot example: after the
    system turn and "OK" when present, else the first message."""
    if len(messages) >= 3 and messages[1]["role"] == "assistant" and messages[2]["role"] == "user":
        return 2
    return 0


def _unobserve(text: str) -> str:
    return text[len("Observation: "):] if text.startswith("Observation: ") else text


def decision_view(messages: Sequence[Message], k: int) -> list[Message]:
    """The one-turn prompt of the next decision of a conversation that ends with a user turn:
    the instruction, the last `k` actions (`Previous actions: a | b`) and the current observation.

    The conversation is the full layout of this module (prefix, task message, turns); the task
    message is split back into instruction and first observation (`task_message`)."""
    msgs = strip_one_shot(list(messages))
    t = _task_index(msgs)
    instruction, _, first_obs = msgs[t]["content"].partition("\nObservation: ")
    turns = msgs[t + 1:]
    actions = []
    for m in turns:
        if m["role"] == "assistant":
            action = parse_reply(m["content"])[1]
            actions.append(action if action is not None else m["content"].strip())
    observation = _unobserve(turns[-1]["content"]) if turns and turns[-1]["role"] == "user" else first_obs
    lines = [instruction]
    if k > 0 and actions:
        lines.append("Previous actions: " + " | ".join(actions[-k:]))
    lines.append(format_observation(observation))
    return [{"role": "user", "content": "\n".join(lines)}]


#: The columns of a preference row in the decision view whose sides hold more than one decision:
#: every decision of the chosen / rejected side, in order, each `{"prompt", "completion"}`.
DECISION_COLUMNS = ("chosen_decisions", "rejected_decisions")


def decision_rows(rows: Sequence[dict], k: int) -> list[dict]:
    """Training rows in the decision view: an SFT row (`prompt` + `completion`, or `messages`)
    becomes one row per assistant turn after the task message.

    A preference row keeps every decision of each side: its `prompt`, `chosen` and `rejected` are
    the first diverging assistant turns (a multi-turn pair shares the turns before them, which
    become history in the prompt), exactly TRL's row; when a side holds more than one assistant
    turn, `chosen_decisions` and `rejected_decisions` (`DECISION_COLUMNS`) list every decision of
    that side, the first included, each `{"prompt": its own view, "completion": [the turn]}`: the
    prompt the policy sees at that point of the side's rollout. A pair whose sides never diverge in
    an assistant turn is dropped."""
    out: list[dict] = []
    for row in rows:
        if "chosen" in row:
            pair = _preference_decisions(row, k)
            if pair is not None:
                out.append(pair)
            continue
        full = strip_one_shot([*row.get("prompt", []), *row.get("completion", []), *row.get("messages", [])])
        start = _task_index(full) + 1
        for i in range(start, len(full)):
            if full[i]["role"] == "assistant":
                out.append({"prompt": decision_view(full[:i], k), "completion": [full[i]]})
    return out


def _preference_decisions(row: dict, k: int) -> dict | None:
    """A preference row in the decision view (see `decision_rows`), or None when its sides never
    diverge in an assistant turn."""
    j = _first_divergence(row["chosen"], row["rejected"])
    if j is None:
        return None
    sides = {}
    for side, col in zip(("chosen", "rejected"), DECISION_COLUMNS):
        conversation = [*row["prompt"], *row[side]]
        start = len(row["prompt"])
        sides[col] = [{"prompt": decision_view(conversation[:i], k), "completion": [conversation[i]]}
                      for i in range(start + j, len(conversation)) if conversation[i]["role"] == "assistant"]
    first = sides[DECISION_COLUMNS[0]][0]
    out = {**{key: v for key, v in row.items() if key not in DECISION_COLUMNS},
           "prompt": first["prompt"], "chosen": first["completion"],
           "rejected": sides[DECISION_COLUMNS[1]][0]["completion"]}
    if any(len(d) > 1 for d in sides.values()):
        out.update(sides)
    return out


def _first_divergence(chosen: Sequence[Message], rejected: Sequence[Message]) -> int | None:
    """The index of the first turn where the sides differ, when both are assistant turns; None
    when they differ in an observation first or never."""
    for j, (a, b) in enumerate(zip(chosen, rejected)):
        if a != b:
            return j if a["role"] == b["role"] == "assistant" else None
    return None


def env_prefix(env: str) -> list[Message]:
    """The prompt prefix (role + one-shot) of a registered environment, without starting it."""
    cls = env_class(env)
    if cls is None:
        return prefix_messages(DEFAULT_SYSTEM_PROMPT, "", [])
    system = getattr(cls, "system_prompt", "") or DEFAULT_SYSTEM_PROMPT
    ex_instr, ex_steps = getattr(cls, "one_shot", lambda: ("", []))()
    return prefix_messages(system, ex_instr, ex_steps)


DEFAULT_SYSTEM_PROMPT = (
    "You are an agent acting in a text environment. Respond with one thought and one action per "
    "turn, in the format:\nThought: ...\nAction: ..."
)


def merge_user_turns(messages: list[Message]) -> list[Message]:
    """The conversation with each run of consecutive user turns joined into one (blank line between).

    The ReAct layout has two user turns in a row (the one-shot example's last observation, then
    the task message); alternating chat templates (Llama-2-chat, Mistral) reject that. Applied
    right before every chat template, in training and at inference alike, so both see the same
    text."""
    out: list[Message] = []
    for m in messages:
        if out and m["role"] == "user" and out[-1]["role"] == "user":
            out[-1] = {**out[-1], "content": out[-1]["content"] + "\n\n" + m["content"]}
        else:
            out.append(dict(m))
    return out
