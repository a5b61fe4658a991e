"""Which tokens the policy writes: per-token loss masks from any chat template.

With `{% generation %}` markers in the template (the local models) its own assistant mask is the
answer. Without them (Qwen2.5-Instruct, Llama-2/3 chat, Mistral, ...) each assistant turn spans
from the end of the conversation before it (rendered with the generation prompt) to the end of
the conversation including it, found by tokenizing prefix by prefix. That span also holds the
end-of-turn token (which teaches the model to stop) and any whitespace the template writes after it.

Conversations go through `merge_user_turns` first (alternating templates reject two user turns
in a row); `core.train.common.fit_prompts` does it for training rows, `HFPolicy` at inference.
"""

from __future__ import annotations

import re
from typing import Any

_GENERATION = re.compile(r"\{%-?\s*generation\s*-?%\}")


def has_generation_markers(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template marks assistant text with `{% generation %}`."""
    return bool(_GENERATION.search(tokenizer.chat_template or ""))


def chat_ids(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool, **kw: Any) -> Any:
    """Token ids of a conversation (the full tokenizer output when extra `kw` are given)."""
    out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt,
                                        return_dict=True, **kw)
    return out if kw else list(out["input_ids"])


def assistant_mask(tokenizer: Any, prompt: list[dict[str, str]], completion: list[dict[str, str]],
                   start: int, length: int) -> list[int]:
    """1 for completion tokens the policy writes (assistant turns), 0 elsewhere (observation turns,
    template headers), for positions `start .. start+length` of the tokenized prompt+completion:
    the template's own mask where it has generation markers, else `boundary_mask`."""
    if has_generation_markers(tokenizer):
        full = chat_ids(tokenizer, prompt + completion, False, return_assistant_tokens_mask=True)
        return [int(m) for m in full["assistant_masks"][start:start + length]]
    return boundary_mask(tokenizer, prompt, completion, start, length)


def boundary_mask(tokenizer: Any, prompt: list[dict[str, str]], completion: list[dict[str, str]],
                  start: int, length: int) -> list[int]:
    """The assistant mask of the completion's turns from prefix tokenizations (any chat template)."""
    spans = []
    for k, msg in enumerate(completion):
        if msg["role"] != "assistant":
            continue
        lo = len(chat_ids(tokenizer, prompt + completion[:k], generation_prompt=True))
        hi = len(chat_ids(tokenizer, prompt + completion[: k + 1], generation_prompt=False))
        spans.append((lo, hi))
    return [int(any(lo <= start + j < hi for lo, hi in spans)) for j in range(length)]


def split_row(row: dict[str, Any]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(prompt, completion) of an SFT row: `{"prompt", "completion"}`, or `{"messages"}` split
    before its first assistant turn."""
    if "prompt" in row:
        return list(row["prompt"]), list(row["completion"])
    msgs = list(row["messages"])
    first = next((i for i, m in enumerate(msgs) if m["role"] == "assistant"), len(msgs))
    return msgs[:first], msgs[first:]


def tokenize_sft_row(tokenizer: Any, row: dict[str, Any]) -> dict[str, list[int]]:
    """`{"input_ids", "assistant_masks"}` of an SFT row: the loss covers the completion's assistant
    turns only (end-of-turn included), never the prompt or the observation turns."""
    prompt, completion = split_row(row)
    ids = chat_ids(tokenizer, prompt + completion, generation_prompt=False)
    return {"input_ids": ids, "assistant_masks": boundary_mask(tokenizer, prompt, completion, 0, len(ids))}
