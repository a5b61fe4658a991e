"""A byte-level BPE tokenizer trained offline on an environment's own text, with a chat template.

The corpus is what the agent will read and write: the ReAct system prompt and one-shot example,
task instructions and first observations, the expert's thoughts and actions, the observations of
expert episodes (for shop: result pages and item pages, so catalogue titles, attributes and
options), the valid actions, and any extra text the environment offers through an optional
`corpus_text()` method (for shop: the catalogue itself). Digits are split one by one so that
prices never become opaque merged tokens the model cannot copy.

An environment may also name strings the agent must copy verbatim from an observation into an
action, through an optional `whole_tokens()` method (for shop: the catalogue's product ids). Each
becomes one added token, so copying an id is one attention lookup instead of a ten-token induction
over ids that all start with `B0`. Measured on the tiny weak model (docs/experiments.md): with
per-character ids it never wrote a valid id; with whole-token ids it clicks ids from the page.

The chat template is ChatML-like (`<|im_start|>role\\n…<|im_end|>\\n`). Assistant content and its
`<|im_end|>` sit inside `{% generation %}` markers, so TRL's `assistant_only_loss` (and
`apply_chat_template(..., return_assistant_tokens_mask=True)`) know exactly which tokens the model
writes, end-of-turn included, which is what teaches it to stop.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from transformers import PreTrainedTokenizerFast

from core.agents.prompt import env_prefix, format_assistant, format_observation, task_message
from core.envs.base import make_env

if TYPE_CHECKING:
    from core.envs.base import Env

BOS, EOS, PAD, IM_START = "<|endoftext|>", "<|im_end|>", "<|pad|>", "<|im_start|>"
SPECIAL_TOKENS = [PAD, BOS, IM_START, EOS]

# Jinja whitespace control everywhere: transformers renders with trim_blocks/lstrip_blocks, so
# every newline is written as an explicit '\n' string.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- message['content'] + '<|im_end|>' -}}{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- message['content'] + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def render_chat(messages: list[dict[str, str]]) -> str:
    """The template's text for a conversation (used to put the chat framing in the corpus)."""
    return "".join(f"{IM_START}{m['role']}\n{m['content']}{EOS}\n" for m in messages)


def env_corpus(env: Env, n_tasks: int | None = None, split: str = "train") -> Iterator[str]:
    """Text of an environment for tokenizer training: prompts, and expert episodes of `n_tasks`
    tasks of `split` (all when None) played through `env`."""
    yield render_chat(env_prefix(env.name))
    yield from _catalogue_text(env)
    tasks = env.tasks(split)
    for task in tasks[: n_tasks if n_tasks is not None else len(tasks)]:
        yield from _expert_episode_text(env, task.task_id)


def train_env_tokenizer(env_name: str, n_tasks: int | None = None, vocab_size: int = 4096,
                        model_max_length: int = 2048) -> PreTrainedTokenizerFast:
    """The tokenizer of an environment: BPE on its corpus (`env_corpus`), plus its optional
    `whole_tokens()` kept whole. One env instance serves both (ScienceWorld starts a JVM)."""
    env = make_env(env_name)
    try:
        extra = getattr(env, "whole_tokens", None)
        whole = list(extra()) if callable(extra) else []
        return train_tokenizer(env_corpus(env, n_tasks), vocab_size, model_max_length, whole)
    finally:
        env.close()


def _catalogue_text(env: Env) -> Iterator[str]:
    """Extra text an environment offers: its `corpus_text()` when it has one, else the records
    of a `catalog.products` list (the shop's catalogue: titles, options, descriptions, …)."""
    extra = getattr(env, "corpus_text", None)
    if callable(extra):
        yield from extra()
        return
    for p in getattr(getattr(env, "catalog", None), "products", None) or []:
        fields = [getattr(p, k, "") for k in ("asin", "title", "breadcrumb", "description")]
        fields += list(getattr(p, "attributes", []) or []) + list(getattr(p, "features", []) or [])
        fields += list(getattr(p, "reviews", []) or [])
        for dim, values in (getattr(p, "options", None) or {}).items():
            fields += [dim, *values]
        yield " [SEP] ".join(str(f) for f in fields if f)


def _expert_episode_text(env: Env, task_id: str) -> Iterator[str]:
    """One expert episode rendered as the chat the agent sees, plus the valid actions on the way."""
    observation, instruction = env.reset(task_id)
    messages = [{"role": "user", "content": task_message(instruction, observation)}]
    valid: set[str] = set(env.valid_actions() or [])
    for step in env.expert(task_id) or []:
        messages.append({"role": "assistant", "content": format_assistant(step.thought, step.action)})
        result = env.step(step.action)
        messages.append({"role": "user", "content": format_observation(result.observation)})
        valid.update(env.valid_actions() or [])
        if result.done:
            break
    yield render_chat(messages)
    if valid:
        yield "\n".join(sorted(valid))


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, model_max_length: int = 2048,
                    whole_tokens: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts` and wrap it for transformers (pad/eos/bos, chat template);
    each of `whole_tokens` is added as one token (matched before BPE)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no unknowns
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=None,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,  # exact round trip of actions and observations
    )
    fast.chat_template = CHAT_TEMPLATE
    if whole_tokens:
        fast.add_tokens(sorted(set(whole_tokens)))
    return fast
