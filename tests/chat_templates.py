"""Chat templates of real model families, for tests: Llama-3.1 (as TRL ships it), Llama-2-chat and
Mistral-Instruct (as their hub tokenizers carry them: both reject two user turns in a row).
`with_template` puts one on a copy of a local model folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import trl

LLAMA3_1 = (Path(trl.__file__).parent / "chat_templates" / "llama3_1.jinja").read_text()

LLAMA2_CHAT = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)

MISTRAL = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)

TEMPLATES = {"llama3.1": LLAMA3_1, "llama2-chat": LLAMA2_CHAT, "mistral": MISTRAL}


def with_template(model_dir: str | Path, out_dir: Path, template: str) -> Path:
    """A copy of `model_dir` whose tokenizer carries `template`."""
    from transformers import AutoTokenizer

    shutil.copytree(model_dir, out_dir)
    tok = AutoTokenizer.from_pretrained(out_dir)
    tok.chat_template = template
    tok.save_pretrained(out_dir)
    return out_dir
