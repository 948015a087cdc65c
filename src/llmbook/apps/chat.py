"""Chat templates and multi-turn context (Chapter 12).

A chat model sees one string: the conversation rendered by a *chat template*, which
marks who said what and where the assistant's turn starts. Hugging Face stores the
template as Jinja source in the tokenizer (``tokenizer.chat_template``) and renders it
with ``apply_chat_template``. Here the same thing is a small dataclass:
:meth:`ChatTemplate.render` renders in plain Python, and :meth:`ChatTemplate.to_jinja`
writes the equivalent Jinja, so the two can be checked against ``transformers``
(``tests/unit/apps/test_apps.py``).

:func:`fit_to_context` keeps a conversation inside a model's context window by
dropping the oldest turns (the system prompt stays), and :func:`reply` runs one
assistant turn with :func:`llmbook.decoding.generate`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "ROLES",
    "ChatTemplate",
    "COURSE_TEMPLATE",
    "CHATML",
    "check_messages",
    "fit_to_context",
    "reply",
]

ROLES = ("system", "user", "assistant")


def check_messages(messages: Sequence[dict]) -> None:
    """Raise ValueError/TypeError unless `messages` is a well-formed conversation.

    A conversation is a list of ``{"role": ..., "content": str}`` dicts: an optional
    system message first, then user and assistant turns alternating, user first.
    """
    if not isinstance(messages, Sequence) or isinstance(messages, str):
        raise TypeError(
            f"messages must be a list of dicts, got {type(messages).__name__}"
        )
    if not messages:
        raise ValueError("messages is empty")
    expected = "user"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            raise ValueError(
                f"message {i} must be a dict with keys role and content: {m!r}"
            )
        if not isinstance(m["content"], str):
            raise TypeError(
                f"message {i}: content must be a str, got {type(m['content']).__name__}"
            )
        role = m["role"]
        if role not in ROLES:
            raise ValueError(
                f"message {i}: unknown role {role!r}, expected one of {ROLES}"
            )
        if role == "system":
            if i != 0:
                raise ValueError(f"message {i}: a system message may only come first")
            continue
        if role != expected:
            raise ValueError(
                f"message {i}: expected a {expected} turn, got {role} (user and "
                "assistant turns must alternate, user first)"
            )
        expected = "assistant" if role == "user" else "user"


@dataclass(frozen=True)
class ChatTemplate:
    """How each role's message is written: format strings with one ``{content}``.

    ``generation_prompt`` is appended when the model is to write the next
    assistant turn (``add_generation_prompt=True``). The literal parts must be ASCII
    (they are written into Jinja string literals by :meth:`to_jinja`).
    """

    system: str
    user: str
    assistant: str
    generation_prompt: str = ""

    def __post_init__(self) -> None:
        for name in ("system", "user", "assistant"):
            fmt = getattr(self, name)
            if fmt.count("{content}") != 1:
                raise ValueError(
                    f"{name} must contain '{{content}}' exactly once: {fmt!r}"
                )
        for name in ("system", "user", "assistant", "generation_prompt"):
            if not getattr(self, name).isascii():
                raise ValueError(f"{name} must be ASCII: {getattr(self, name)!r}")

    def _parts(self, role: str) -> tuple[str, str]:
        before, after = getattr(self, role).split("{content}")
        return before, after

    def render(
        self, messages: Sequence[dict], add_generation_prompt: bool = False
    ) -> str:
        """The conversation as the one string the model reads."""
        check_messages(messages)
        out = []
        for m in messages:
            before, after = self._parts(m["role"])
            out.append(before + m["content"] + after)
        if add_generation_prompt:
            out.append(self.generation_prompt)
        return "".join(out)

    def to_jinja(self) -> str:
        """The same template as Jinja source, for ``apply_chat_template``.

        Every literal is written as a Jinja string expression (``{{ "..." }}``), never
        as raw template text: ``transformers`` renders with ``trim_blocks`` and
        ``lstrip_blocks``, which would eat a newline that follows a tag.
        """

        def lit(text: str) -> str:
            return "{{ " + json.dumps(text) + " }}" if text else ""

        branches = []
        for i, role in enumerate(ROLES):
            before, after = self._parts(role)
            keyword = "if" if i == 0 else "elif"
            branches.append(
                f"{{%- {keyword} message['role'] == '{role}' -%}}"
                f"{lit(before)}{{{{ message['content'] }}}}{lit(after)}"
            )
        return (
            "{%- for message in messages -%}"
            + "".join(branches)
            + "{%- else -%}{{ raise_exception('unknown role: ' + message['role']) }}"
            + "{%- endif -%}{%- endfor -%}"
            + "{%- if add_generation_prompt -%}"
            + lit(self.generation_prompt)
            + "{%- endif -%}"
        )


#: The course model's template. Chapter 7 tuned ``course-gpt-sft`` on
#: ``question + "\n" + answer + "<|endoftext|>"``, so a user turn ends with a newline
#: and an assistant turn with the end-of-text token; a system prompt is plain text
#: followed by a blank line. No role markers: the tiny model never saw any.
COURSE_TEMPLATE = ChatTemplate(
    system="{content}\n\n",
    user="{content}\n",
    assistant="{content}<|endoftext|>",
)

#: ChatML, the format of many open chat models (OpenAI's original, Qwen, ...).
CHATML = ChatTemplate(
    system="<|im_start|>system\n{content}<|im_end|>\n",
    user="<|im_start|>user\n{content}<|im_end|>\n",
    assistant="<|im_start|>assistant\n{content}<|im_end|>\n",
    generation_prompt="<|im_start|>assistant\n",
)


def fit_to_context(
    messages: Sequence[dict],
    template: ChatTemplate,
    encode: Callable[[str], list[int]],
    max_tokens: int,
) -> list[dict]:
    """The longest recent part of the conversation that fits in `max_tokens` tokens.

    The system message (if any) always stays; then whole exchanges are dropped from
    the oldest on, so the kept part still starts with a user turn. Measured with the
    generation prompt added, as it will be rendered for the next reply.

    Raises:
        ValueError: even the system message and the last user turn do not fit.
    """
    check_messages(messages)
    system = [m for m in messages if m["role"] == "system"]
    turns = [m for m in messages if m["role"] != "system"]
    starts = [i for i, m in enumerate(turns) if m["role"] == "user"]
    for start in starts:  # oldest first: the first that fits keeps the most
        kept = system + list(turns[start:])
        if len(encode(template.render(kept, add_generation_prompt=True))) <= max_tokens:
            return kept
    raise ValueError(
        f"the system message and the last user turn alone exceed max_tokens={max_tokens}"
    )


@torch.no_grad()
def reply(
    model: torch.nn.Module,
    tokenizer,
    messages: Sequence[dict],
    template: ChatTemplate = COURSE_TEMPLATE,
    max_new_tokens: int = 32,
    context_length: int = 128,
) -> tuple[str, list[dict]]:
    """One assistant turn, decoded greedily, and the part of the history it saw.

    The conversation is first cut with :func:`fit_to_context` so that the prompt
    and `max_new_tokens` fit in `context_length`; generation stops at the
    tokenizer's end-of-text token.
    """
    if messages and messages[-1]["role"] != "user":
        raise ValueError("the last message must be a user turn to reply to")
    from llmbook.decoding import generate

    kept = fit_to_context(
        messages, template, tokenizer.encode, context_length - max_new_tokens
    )
    prompt = template.render(kept, add_generation_prompt=True)
    device = next(model.parameters()).device
    ids = torch.tensor([tokenizer.encode(prompt)], device=device)
    eos = tokenizer.eos_token_id
    out = generate(model, ids, max_new_tokens, temperature=0.0, eos_id=eos)
    new = out[0, ids.shape[1] :].tolist()
    if eos in new:
        new = new[: new.index(eos)]
    return tokenizer.decode(new).strip(), kept
