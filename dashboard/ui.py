"""Small Streamlit building blocks shared by the pages.

Trajectory text is shown only through `st.text` / `st.code` (never markdown or HTML), so an
observation holding `<script>` or markdown links is displayed literally; stored names inside
markdown-rendering elements (captions, labels, messages) go through `plain`, and messages that
may quote them through `error`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import streamlit as st

from core.errors import one_line

_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&@])")
# Streamlit links bare `http://...`, `www.x` and `a@b.c` after the escapes are read (GFM autolinks
# work on the text): an invisible word joiner before `:` and `@` and after `www` stops that.
_AUTOLINK = re.compile(r"(?i)(?<=www)(?=\.)|(?=[:@])")
WORD_JOINER = "\u2060"


def plain(value: object) -> str:
    """A store value (model name, id, message) made literal for elements that render markdown:
    no emphasis, link, image, HTML, autolink or directive; the same characters on screen (plus
    invisible word joiners that keep URLs from becoming links)."""
    return _MARKDOWN.sub(r"\\\1", _AUTOLINK.sub(WORD_JOINER, str(value)))


def error(message: object) -> None:
    """An error box whose message may quote stored or typed text (a file, task or model name):
    shown literally, on one line."""
    st.error(plain(one_line(str(message))))


def text(label: str, body: str, code: bool = False) -> None:
    """A labelled block of untrusted text (`label` is ours, `body` comes from the data)."""
    st.caption(label)
    if code:
        st.code(body or " ", language=None, wrap_lines=True)
    else:
        st.text(body or "–")


def conversation(messages: Sequence[dict[str, str]], mark: int | None = None,
                 mark_label: str = "diverges here") -> None:
    """Chat turns as chat bubbles with their content as plain text; turn `mark` is boxed and
    labelled (the step where two continuations part)."""
    for i, m in enumerate(messages):
        role = "assistant" if m.get("role") == "assistant" else "user"
        with st.chat_message(role):
            if i == mark:
                with st.container(border=True):
                    st.markdown(f":orange[**▶ {mark_label}**]")
                    st.text(m.get("content", ""))
            else:
                st.text(m.get("content", ""))


def sync_query(prefix: str, params: dict[str, tuple[str, Callable[[str], Any]]]) -> bool:
    """Deep links: apply `?param=value` to the widget state key it names when the URL changed
    from outside (a link from another page), not on every rerun. Returns whether it applied.

    `params` maps a query parameter to (session-state key, parser); unparsable values are ignored.
    """
    incoming = tuple(st.query_params.get(p) for p in params)
    seen_key = f"_{prefix}_link"
    if st.session_state.get(seen_key) == incoming or all(v is None for v in incoming):
        return False
    st.session_state[seen_key] = incoming
    for (state_key, parse), raw in zip(params.values(), incoming, strict=True):
        if raw is None:
            continue
        try:
            st.session_state[state_key] = parse(raw)
        except (TypeError, ValueError):
            continue
    return True


def write_query(prefix: str, values: dict[str, Any]) -> None:
    """Reflect the page's state in the URL (so it can be bookmarked or shared) without
    making `sync_query` re-apply it."""
    for k, v in values.items():
        if v is None:
            st.query_params.pop(k, None)
        else:
            st.query_params[k] = str(v)
    st.session_state[f"_{prefix}_link"] = tuple(
        None if v is None else str(v) for v in values.values()
    )


def keep_choice(state_key: str, options: Sequence[Any], default: Any = None) -> None:
    """Drop a remembered widget value that is no longer among `options` (data changed)."""
    if state_key in st.session_state and st.session_state[state_key] not in options:
        if default is None and options:
            default = options[0]
        st.session_state[state_key] = default


def empty(message: str) -> None:
    """The sentence a page shows instead of content that does not exist yet."""
    st.info(message, icon=":material/info:")
