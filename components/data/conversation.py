"""Conversation templates, tokenization and label masking: LLaVA's `preprocess_plain` / `preprocess_v1`, done right.

One entry point, `encode_conversation(conversations, tokenizer, template)`, turns a LLaVA-format sample
(`[{"from": "human" | "gpt", "value": str}, ...]`) into `input_ids` and `labels` (`IGNORE_INDEX` everywhere
except the supervised assistant tokens) plus the position of the image placeholder. It is the ONE path from text
to ids: `encode_prompt(question, tokenizer, template, has_image=...)` is its generation mode, used by the
evaluation runner and `UhdModel` (through `UhdProcessor.prompt_batch`), so a prompt at inference is exactly what
training put before the answer (tests/data/test_prompt_parity.py checks it for every template and tokenizer), and
`expand_image_placeholders` / `expand_image_labels` turn each placeholder into the layout's visual-token slots for
both. `IMAGE_TOKEN` ("<image>") is defined here and imported everywhere else.

Templates
---------
* `plain` (LLaVA stage-1 pretraining, `conv_llava_plain`): the sample becomes `<image>` + caption + "\\n". The
  human prompt is DROPPED (LLaVA's `preprocess_plain` overwrites it with `<image>`); only the caption and its
  "\\n" are supervised; no end-of-sequence token.
* `vicuna_v1` (LLaVA-1.5 stage 2 and evaluation, `conv_vicuna_v1`): `SYSTEM USER: {q1} ASSISTANT: {a1}</s>USER:
  {q2} ASSISTANT: {a2}</s>` (sep " ", sep2 "</s>"). Only each reply and its "</s>" are supervised. For an LLM
  whose end token is not `</s>` (SmolLM2: `<|im_end|>`), pass `end_of_turn=tokenizer.eos_token`.
* `chat_template`: the tokenizer's own `apply_chat_template` (e.g. SmolLM2's ChatML). Supervised: each
  assistant content and the end-of-turn token that closes it (default `tokenizer.eos_token`); the template's
  remaining suffix (ChatML's "\\n") and every other token are masked.

The image
---------
A `<image>` marker becomes exactly ONE placeholder id in `input_ids`, `IMAGE_TOKEN_INDEX = -200` by default, as
in LLaVA: the model later replaces it with the layout's visual tokens. -200 can never collide with a vocabulary
id, needs no embedding row, and an embedding lookup that forgets to splice it fails loudly (index error) instead
of silently reading a real token. To emit a registered token instead (HF-style `image_token_index`), pass
`image_token_id=add_image_token(tokenizer)` (components/data/tokenizers.py). As in LLaVA-1.5 (no
`mm_use_im_start_end`), the marker is moved to the front of its turn as `<image>\\n` + text, so 558K prompts
that end in `<image>` are normalized. Text is tokenized in chunks split at the marker, exactly like LLaVA's
`tokenizer_image_token`, so the ids around the image are LLaVA's too: for the Llama vocabulary
`... USER: <image>\\nWhat` is `... ▁US ER : ▁ [-200] ▁ <0x0A> What` (each chunk gets SentencePiece's dummy "▁").

Label masking: incremental tokenization, verified
-------------------------------------------------
The rendering is a list of segments (prompt parts masked, reply parts supervised). The whole rendering is
tokenized once; the token boundary of every segment is the length of the tokenization of the rendering up
to that segment's end, and that prefix tokenization must be an exact prefix (same ids) of the whole one.
If it is not (a tokenizer that merges across a turn boundary, a template that renders a turn differently
once more turns follow), `TokenizationMismatch` is raised with the rendering and the lengths, never the
LLaVA behaviour of masking every label (`target[:] = IGNORE_INDEX`) so the loss silently becomes 0. A sample
with no supervised token left (e.g. after truncation) raises `NoSupervisedTokens`.

Why LLaVA needs `-2` and `-1` (and why this module does not)
-----------------------------------------------------------
LLaVA's `preprocess_v1` instead tokenizes each round `USER: q ASSISTANT: a` (split at "</s>") on its own and
adds up lengths; `llava_v1_reference_labels` below is a faithful port (used by the tests to show that both
give identical labels on the Llama vocabulary). With SentencePiece:
* `instruction_len = len(tok("... ASSISTANT: ")) - 2`: -1 for the `<s>` every standalone tokenization adds,
  -1 because the trailing space of "ASSISTANT: " becomes its own "▁" token, while in the whole conversation
  that space is the "▁" of the reply's first piece (`▁Hello`). So the mask ends right after ":".
* `round_len = len(tok(round))` counts the round's own `<s>` in place of the "</s>" that `split` removed.
* For rounds after the first, with a `legacy=False` tokenizer (no dummy "▁" after a special token), the
  whole conversation has `</s> USER :` (1 piece, "USER") where the standalone round has `<s> ▁US ER :`
  (2 pieces): hence LLaVA's extra `round_len -= 1; instruction_len -= 1` when `not tokenizer.legacy`. With a
  legacy tokenizer (`</s> ▁US ER`) no correction is needed. Getting this wrong shifts every later round by one
  token, LLaVA's length check fires and the sample silently gets all-masked labels (LLaVA issues #661, #1166).
Here each boundary comes from the tokenizer itself (the prompt segment ends at "ASSISTANT:", the reply
segment starts with " Hello"), so no per-tokenizer offset exists to get wrong, and the check compares ids,
not only lengths (a boundary-crossing merge that keeps lengths equal still raises; LLaVA would mislabel it).

Truncation
----------
`max_length` cuts text from the right (as LLaVA's `model_max_length`), never at or before the image
placeholder, and `Encoded.num_truncated` reports the dropped tokens. The visual-token count is not known at
tokenization time: pass `num_visual_tokens` (then `len(input_ids) - 1 + num_visual_tokens <= max_length` is
what is enforced) or call `check_fits` / `truncate` later, once the slicing layout is known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

IGNORE_INDEX = -100
IMAGE_TOKEN_INDEX = -200
IMAGE_TOKEN = "<image>"
# LLaVA-1.5's response-format prompts: the same words end short-answer and multiple-choice questions in the 665K
# training mix and in the benchmark prompts, which is what makes a model answer "Yes" or "B" rather than a sentence
SHORT_ANSWER = "Answer the question using a single word or phrase."
LETTER_ANSWER = "Answer with the option's letter from the given choices directly."

TEMPLATES = ("plain", "vicuna_v1", "chat_template")

VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
VICUNA_V1_ROLES = ("USER", "ASSISTANT")
VICUNA_V1_SEP = " "
VICUNA_V1_SEP2 = "</s>"
PLAIN_SEP = "\n"

_USER_ROLES = {"human": "user", "user": "user"}
_ASSISTANT_ROLES = {"gpt": "assistant", "assistant": "assistant"}


class ConversationError(ValueError):
    """The sample cannot be encoded as asked (bad roles, image markers, template or tokenizer)."""


class TokenizationMismatch(ConversationError):
    """Per-turn tokenization does not add up to the whole-conversation tokenization: labels would be wrong."""

    def __init__(self, rendering: str, expected_length: int, actual_length: int, agree_length: int, segment: int):
        self.rendering = rendering
        self.expected_length = expected_length  # tokens of the whole conversation
        self.actual_length = actual_length  # tokens of the conversation up to the end of `segment`, tokenized alone
        self.agree_length = agree_length  # how many leading ids of the two agree
        self.segment = segment  # index of the prompt/reply segment whose end could not be placed (-1: LLaVA port)
        super().__init__(
            f"tokenization mismatch at segment {segment}: the conversation up to there tokenizes to {actual_length} "
            f"ids, but only {agree_length} of them start the whole conversation's {expected_length} ids, so the "
            f"label mask cannot be placed (LLaVA would silently mask every label). Rendering: {rendering!r}"
        )


class NoSupervisedTokens(ConversationError):
    """Every label is IGNORE_INDEX: the sample would add nothing but padding to the loss."""


class ContextTooLong(ConversationError):
    """The sample cannot fit `max_length` without cutting the image placeholder or its visual tokens."""

    def __init__(self, message: str, length: int, max_length: int):
        self.length = length
        self.max_length = max_length
        super().__init__(message)


@dataclass(frozen=True)
class Encoded:
    """One tokenized sample. `labels[i]` is `input_ids[i]` where supervised, else IGNORE_INDEX (unshifted)."""

    input_ids: list[int]
    labels: list[int]
    image_positions: list[int] = field(default_factory=list)  # indices of the placeholder in input_ids
    num_truncated: int = 0  # text tokens dropped from the right by truncation
    rendering: str = ""  # the template's text, `<image>` marker included

    @property
    def num_supervised(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)

    def expanded_length(self, num_visual_tokens: int) -> int:
        """Sequence length once the model expands each placeholder into `num_visual_tokens` embeddings."""
        return len(self.input_ids) + len(self.image_positions) * (num_visual_tokens - 1)


# --------------------------------------------------------------------------------------------- conversations


@dataclass(frozen=True)
class _Turn:
    role: str  # "system" | "user" | "assistant"
    text: str


def _normalize(conversations: Sequence[dict], has_image: bool | None, allow_system: bool) -> list[_Turn]:
    """Validate roles (user/assistant alternating, starting with user) and move the `<image>` marker to the front."""
    if not conversations:
        raise ConversationError("empty conversation")
    turns: list[_Turn] = []
    for i, message in enumerate(conversations):
        try:
            speaker, value = message["from"], message["value"]
        except (KeyError, TypeError) as err:
            raise ConversationError(f"turn {i} is not a {{'from', 'value'}} dict: {message!r}") from err
        if not isinstance(value, str):
            raise ConversationError(f"turn {i}: value must be a string, got {type(value).__name__}")
        if speaker == "system":
            if i != 0 or not allow_system:
                raise ConversationError(f"turn {i}: a system turn is only allowed first, with template chat_template")
            role = "system"
        else:
            role = _USER_ROLES.get(speaker) or _ASSISTANT_ROLES.get(speaker)
            if role is None:
                raise ConversationError(f"turn {i}: unknown speaker {speaker!r} (expected human/gpt)")
        turns.append(_Turn(role, value))
    dialogue = turns[1:] if turns[0].role == "system" else turns
    for j, turn in enumerate(dialogue):
        expected = "user" if j % 2 == 0 else "assistant"
        if turn.role != expected:
            raise ConversationError(
                f"turn {j}: expected the {expected}, got the {turn.role} (turns must alternate, user first)"
            )
    for i, turn in enumerate(turns):
        if turn.role != "user" and IMAGE_TOKEN in turn.text:
            raise ConversationError(f"turn {i}: {IMAGE_TOKEN} in a {turn.role} turn; only human turns hold the image")
    count = sum(t.text.count(IMAGE_TOKEN) for t in turns)
    if count > 1:
        raise ConversationError(f"{count} {IMAGE_TOKEN} markers; one image per sample is supported")
    if has_image is not None and has_image != (count == 1):
        raise ConversationError(f"has_image={has_image} but the conversation has {count} {IMAGE_TOKEN} marker(s)")
    # LLaVA's preprocess_multimodal: "<image>" + "\n" + the rest, stripped (a trailing marker moves to the front).
    return [
        _Turn(t.role, IMAGE_TOKEN + "\n" + t.text.replace(IMAGE_TOKEN, "").strip()) if IMAGE_TOKEN in t.text else t
        for t in turns
    ]


# ---------------------------------------------------------------------------------------------- tokenization


def special_prefix(tokenizer) -> list[int]:
    """The ids the tokenizer puts before a text by itself (Llama: [<s>]; GPT-2, SmolLM2: [])."""
    with_specials = tokenizer("a", add_special_tokens=True)["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    n = len(with_specials) - len(without)
    if n < 0 or with_specials[n:] != without:
        raise ConversationError("the tokenizer appends special tokens after the text; not supported")
    return list(with_specials[:n])


def tokenize_with_image(text: str, tokenizer, image_token_id: int = IMAGE_TOKEN_INDEX, prefix=()) -> list[int]:
    """LLaVA's `tokenizer_image_token`: chunks split at `<image>`, each tokenized alone, joined by one placeholder.

    `prefix` (e.g. the BOS id) is put once in front, as the tokenizer would for the whole text.
    """
    ids = list(prefix)
    for k, chunk in enumerate(text.split(IMAGE_TOKEN)):
        if k:
            ids.append(image_token_id)
        if chunk:
            ids.extend(tokenizer(chunk, add_special_tokens=False)["input_ids"])
    return ids


def _single_token(tokenizer, text: str, what: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ConversationError(
            f"{what} {text!r} is {len(ids)} tokens for this tokenizer, expected a single (special) token; "
            f"pass end_of_turn=tokenizer.eos_token ({tokenizer.eos_token!r})"
        )
    return ids[0]


@dataclass(frozen=True)
class _Segment:
    text: str
    supervised: bool = False
    through_id: int | None = None  # supervise this segment's tokens up to and including the first of this id


def _encode_segments(segments: list[_Segment], tokenizer, image_token_id: int, prefix: list[int]) -> Encoded:
    """Tokenize the whole rendering once; place every segment boundary by tokenizing the rendering up to it."""
    merged: list[_Segment] = []  # adjacent plain segments of the same kind need no boundary
    for seg in segments:
        mergeable = merged and seg.through_id is None and merged[-1].through_id is None
        if mergeable and merged[-1].supervised == seg.supervised:
            merged[-1] = _Segment(merged[-1].text + seg.text, seg.supervised)
        elif seg.text or seg.through_id is not None:
            merged.append(seg)
    rendering = "".join(s.text for s in merged)
    ids = tokenize_with_image(rendering, tokenizer, image_token_id, prefix)
    labels = [IGNORE_INDEX] * len(ids)
    start, text_end = len(prefix), 0
    for k, seg in enumerate(merged):
        text_end += len(seg.text)
        if k == len(merged) - 1:
            end = len(ids)
        else:
            head = tokenize_with_image(rendering[:text_end], tokenizer, image_token_id, prefix)
            if head != ids[: len(head)] or len(head) < start:
                agree = next((i for i, (a, b) in enumerate(zip(head, ids, strict=False)) if a != b), len(head))
                raise TokenizationMismatch(rendering, len(ids), len(head), min(agree, len(ids)), k)
            end = len(head)
        if seg.supervised:
            labels[start:end] = ids[start:end]
        elif seg.through_id is not None:
            span = ids[start:end]
            if seg.through_id not in span:
                raise ConversationError(
                    f"end-of-turn id {seg.through_id} not found after an assistant reply in {rendering!r}"
                )
            stop = start + span.index(seg.through_id) + 1
            labels[start:stop] = ids[start:stop]
        start = end
    positions = [i for i, t in enumerate(ids) if t == image_token_id]
    if any(labels[i] != IGNORE_INDEX for i in positions):  # the placeholder sits in a user turn by construction
        raise ConversationError("the image placeholder ended up supervised")
    return Encoded(ids, labels, positions, 0, rendering)


# ---------------------------------------------------------------------------------------------- templates


def _plain_segments(turns: list[_Turn], add_generation_prompt: bool) -> list[_Segment]:
    if len(turns) != 2 - add_generation_prompt or IMAGE_TOKEN not in turns[0].text:
        shape = "[human with <image>]" if add_generation_prompt else "[human with <image>, gpt caption]"
        raise ConversationError(f"template plain needs exactly {shape}")
    if add_generation_prompt:
        return [_Segment(IMAGE_TOKEN)]
    return [_Segment(IMAGE_TOKEN), _Segment(turns[1].text + PLAIN_SEP, supervised=True)]


def _vicuna_segments(turns: list[_Turn], end_of_turn: str, add_generation_prompt: bool) -> list[_Segment]:
    user, assistant = VICUNA_V1_ROLES
    segments = [_Segment(VICUNA_V1_SYSTEM + VICUNA_V1_SEP)]
    for turn in turns:
        if turn.role == "user":
            # "ASSISTANT:" without the space: the space belongs to the reply's first piece ("▁Hello").
            segments.append(_Segment(f"{user}: {turn.text}{VICUNA_V1_SEP}{assistant}:"))
        else:
            segments.append(_Segment(" " + turn.text, supervised=True))
            segments.append(_Segment(end_of_turn, supervised=True))
    if turns[-1].role == "user" and not add_generation_prompt:
        raise ConversationError("the conversation ends with a human turn (pass add_generation_prompt=True)")
    return segments


def _chat_template_segments(
    turns: list[_Turn], tokenizer, eot_id: int | None, add_generation_prompt: bool
) -> list[_Segment]:
    if not getattr(tokenizer, "chat_template", None):
        raise ConversationError("template chat_template: the tokenizer has no chat_template")
    messages = [{"role": t.role, "content": t.text} for t in turns]

    def render(n: int, generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(messages[:n], tokenize=False, add_generation_prompt=generation_prompt)

    segments: list[_Segment] = []
    done = ""
    for n, turn in enumerate(messages, start=1):
        if turn["role"] != "assistant":
            continue
        before = render(n - 1, True)  # everything up to where the reply starts
        after = render(n, False)  # through this turn's end-of-turn suffix
        if not before.startswith(done) or not after.startswith(before):
            raise ConversationError(
                f"chat template is not prefix-stable at message {n - 1}: rendering fewer messages does not give a "
                "prefix of rendering more, so turns cannot be aligned"
            )
        reply = after[len(before) :]
        content = turn["content"] if reply.startswith(turn["content"]) else turn["content"].strip()
        if not reply.startswith(content):
            raise ConversationError(f"chat template changes assistant content at message {n - 1}: {reply!r}")
        segments += [_Segment(before[len(done) :]), _Segment(content, supervised=True)]
        segments.append(_Segment(reply[len(content) :], through_id=eot_id))
        done = after
    full = render(len(messages), add_generation_prompt and messages[-1]["role"] == "user")
    if not full.startswith(done):
        raise ConversationError("chat template is not prefix-stable at the last message")
    if messages[-1]["role"] == "user" and not add_generation_prompt:
        raise ConversationError("the conversation ends with a human turn (pass add_generation_prompt=True)")
    segments.append(_Segment(full[len(done) :]))
    return segments


def _render_segments(
    conversations, tokenizer, template, end_of_turn, has_image, add_generation_prompt
) -> tuple[list[_Segment], list[int]]:
    """The template's segments, and the special ids (BOS) the tokenizer puts in front of a text."""
    if template not in TEMPLATES:
        raise ConversationError(f"unknown template {template!r}; expected one of {TEMPLATES}")
    turns = _normalize(conversations, has_image, allow_system=template == "chat_template")
    if add_generation_prompt and turns[-1].role != "user":
        raise ConversationError("add_generation_prompt=True needs a conversation that ends with a human turn")
    # The end-of-turn token is checked only where it is rendered (after a reply): a one-question generation prompt
    # has none, so vicuna_v1 prompts for GPT-2 / SmolLM2 need no `end_of_turn` to be built.
    has_reply = any(t.role == "assistant" for t in turns)
    if template == "plain":
        return _plain_segments(turns, add_generation_prompt), special_prefix(tokenizer)
    if template == "vicuna_v1":
        eot = VICUNA_V1_SEP2 if end_of_turn is None else end_of_turn
        if has_reply:
            _single_token(tokenizer, eot, "end_of_turn")
        return _vicuna_segments(turns, eot, add_generation_prompt), special_prefix(tokenizer)
    eot_id = _chat_end_of_turn_id(tokenizer, end_of_turn) if has_reply else None
    # apply_chat_template writes any BOS into the text itself; tokenize it without adding specials.
    return _chat_template_segments(turns, tokenizer, eot_id, add_generation_prompt), []


def _chat_end_of_turn_id(tokenizer, end_of_turn: str | None) -> int:
    eot_text = tokenizer.eos_token if end_of_turn is None else end_of_turn
    if eot_text is None:
        raise ConversationError("template chat_template: the tokenizer has no eos_token; pass end_of_turn")
    return _single_token(tokenizer, eot_text, "end_of_turn")


def encode_conversation(
    conversations: Sequence[dict],
    tokenizer,
    template: str,
    max_length: int | None = None,
    *,
    num_visual_tokens: int | None = None,
    image_token_id: int = IMAGE_TOKEN_INDEX,
    end_of_turn: str | None = None,
    has_image: bool | None = None,
    add_generation_prompt: bool = False,
) -> Encoded:
    """Tokenize one LLaVA-format conversation and mask everything but the supervised assistant tokens.

    Args:
        conversations: `[{"from": "human"|"gpt", "value": str}, ...]`, alternating, starting with human (a leading
            `{"from": "system"}` turn is allowed with `chat_template`). At most one `<image>` marker, in a human turn.
        tokenizer: a HF (fast) tokenizer.
        template: "plain", "vicuna_v1" or "chat_template" (see the module docstring).
        max_length: optional length budget; text is cut from the right (see `truncate`).
        num_visual_tokens: visual tokens the placeholder will expand to; only used with `max_length`
            (default 1: the budget counts the placeholder as one token, like LLaVA's tokenizer truncation).
        image_token_id: the placeholder id written for `<image>` (default IMAGE_TOKEN_INDEX = -200).
        end_of_turn: vicuna_v1's sep2 (default "</s>") or chat_template's end-of-turn token (default eos_token).
        has_image: when given, the presence of the `<image>` marker must agree with it.
        add_generation_prompt: the conversation ends with a human turn; end with the assistant prompt, for
            inference ("... ASSISTANT:"); the zero-supervision check is then skipped.

    Raises:
        ConversationError: malformed sample, template or tokenizer.
        TokenizationMismatch: turn boundaries do not tokenize consistently with the whole conversation.
        NoSupervisedTokens: nothing would be supervised (training samples only).
        ContextTooLong: `max_length` cannot be met without cutting into the image.
    """
    segments, prefix = _render_segments(
        conversations, tokenizer, template, end_of_turn, has_image, add_generation_prompt
    )
    encoded = _encode_segments(segments, tokenizer, image_token_id, prefix)
    n_visual = 1 if num_visual_tokens is None else num_visual_tokens
    if add_generation_prompt:  # inference: the prompt's end must stay, so never truncate
        if max_length is not None:
            check_fits(encoded, n_visual, max_length)
        return encoded
    if encoded.num_supervised == 0:
        raise NoSupervisedTokens(f"no supervised token in {encoded.rendering!r}")
    return encoded if max_length is None else truncate(encoded, max_length, n_visual)


def encode_prompt(
    question: str,
    tokenizer,
    template: str,
    *,
    has_image: bool,
    image_token_id: int = IMAGE_TOKEN_INDEX,
    end_of_turn: str | None = None,
) -> Encoded:
    """The generation prompt of one question: the ids training's encoding of `question` + an answer has before the
    answer's first token (the evaluation runner and `UhdModel` build every prompt here).

    `question` is the bare text; with `has_image` the `<image>` marker is put in front of it (`<image>\\n` +
    question, stripped, as `encode_conversation` normalizes a training sample). Template `plain` drops the question
    (as its training does) and needs an image.
    """
    text = f"{IMAGE_TOKEN}\n{question}" if has_image else question
    return encode_conversation(
        [{"from": "human", "value": text}],
        tokenizer,
        template,
        image_token_id=image_token_id,
        end_of_turn=end_of_turn,
        has_image=has_image,
        add_generation_prompt=True,
    )


# ---------------------------------------------------------------------------------------------- truncation


def check_fits(encoded: Encoded, num_visual_tokens: int, max_length: int) -> None:
    """Raise ContextTooLong unless `len(input_ids) - 1 + num_visual_tokens <= max_length` (per placeholder)."""
    length = encoded.expanded_length(num_visual_tokens)
    if length > max_length:
        raise ContextTooLong(
            f"sample needs {length} positions ({len(encoded.input_ids)} ids, {len(encoded.image_positions)} "
            f"placeholder(s) x {num_visual_tokens} visual tokens) > max_length {max_length}",
            length,
            max_length,
        )


def truncate(
    encoded: Encoded, max_length: int, num_visual_tokens: int = 1, require_supervision: bool = True
) -> Encoded:
    """Drop text tokens from the right until the expanded sequence fits `max_length`.

    Never cuts at or before a placeholder (its visual tokens would be split or orphaned): raises ContextTooLong
    instead. Raises NoSupervisedTokens if the cut removes every supervised token.
    """
    if num_visual_tokens < 1:
        raise ValueError("num_visual_tokens must be >= 1")
    extra = len(encoded.image_positions) * (num_visual_tokens - 1)
    keep = max_length - extra  # ids that fit once each placeholder is expanded
    if keep >= len(encoded.input_ids):
        return encoded
    last_image = max(encoded.image_positions, default=-1)
    if keep <= last_image + 1:
        length = encoded.expanded_length(num_visual_tokens)
        raise ContextTooLong(
            f"sample needs {length} positions > max_length {max_length}, and fitting it would cut into the image "
            f"(placeholder at {last_image}, {num_visual_tokens} visual tokens): drop or re-slice the sample",
            length,
            max_length,
        )
    cut = replace(
        encoded,
        input_ids=encoded.input_ids[:keep],
        labels=encoded.labels[:keep],
        num_truncated=encoded.num_truncated + len(encoded.input_ids) - keep,
    )
    if require_supervision and cut.num_supervised == 0:
        raise NoSupervisedTokens(
            f"truncation to {max_length} (dropping {cut.num_truncated} tokens) leaves no supervised token: "
            f"{encoded.rendering!r}"
        )
    return cut


# ---------------------------------------------------------------------------------------------- visual tokens


def _expand_at_placeholders(
    values: Sequence[int], input_ids: Sequence[int], num_visual_tokens: Sequence[int], fill: int, placeholder_id: int
) -> list[int]:
    positions = [i for i, t in enumerate(input_ids) if t == placeholder_id]
    if len(positions) != len(num_visual_tokens):
        raise ValueError(f"{len(positions)} image placeholder(s) for {len(num_visual_tokens)} visual item(s)")
    out, start = [], 0
    for position, count in zip(positions, num_visual_tokens, strict=True):
        out += [*values[start:position], *[fill] * count]
        start = position + 1
    return out + list(values[start:])


def expand_image_placeholders(
    input_ids: Sequence[int],
    num_visual_tokens: Sequence[int],
    visual_token_id: int,
    placeholder_id: int = IMAGE_TOKEN_INDEX,
) -> list[int]:
    """Each placeholder, in order, replaced by `num_visual_tokens[k]` copies of `visual_token_id`: the slots the
    model fills with the layout's visual tokens. Training samples and generation prompts are expanded here."""
    return _expand_at_placeholders(input_ids, input_ids, num_visual_tokens, visual_token_id, placeholder_id)


def expand_image_labels(
    labels: Sequence[int],
    input_ids: Sequence[int],
    num_visual_tokens: Sequence[int],
    placeholder_id: int = IMAGE_TOKEN_INDEX,
) -> list[int]:
    """`labels` aligned with `expand_image_placeholders(input_ids, ...)`: IGNORE_INDEX on every visual slot."""
    return _expand_at_placeholders(labels, input_ids, num_visual_tokens, IGNORE_INDEX, placeholder_id)


# ---------------------------------------------------------------------------------------------- LLaVA reference


def llava_v1_reference_labels(rendering: str, tokenizer, legacy: bool, apply_legacy_fix: bool = True) -> list[int]:
    """A faithful port of LLaVA's `preprocess_v1` label accounting (haotian-liu/LLaVA llava/train/train.py),
    for comparison only: the magic offsets, explained in the module docstring, are kept as they are there.

    `rendering` is a vicuna_v1 prompt (`Encoded.rendering`). `legacy` says how the tokenizer treats text after
    special tokens; `apply_legacy_fix=False` reproduces the LLaVA versions (and forks) without the `-1` for
    `legacy=False` tokenizers. Where LLaVA would print "tokenization mismatch" and set every label to
    IGNORE_INDEX, this raises TokenizationMismatch.
    """
    prefix = special_prefix(tokenizer)

    def tok(text: str) -> list[int]:
        return tokenize_with_image(text, tokenizer, IMAGE_TOKEN_INDEX, prefix)

    input_ids = tok(rendering)
    target = list(input_ids)
    total_len = len(input_ids)  # LLaVA: target.ne(pad_token_id).sum(); no padding here
    sep = VICUNA_V1_SEP + VICUNA_V1_ROLES[1] + ": "
    cur_len = 1
    target[:cur_len] = [IGNORE_INDEX] * cur_len
    for i, rou in enumerate(rendering.split(VICUNA_V1_SEP2)):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len = len(tok(rou))
        instruction_len = len(tok(parts[0])) - 2
        if i != 0 and not legacy and apply_legacy_fix:
            round_len -= 1
            instruction_len -= 1
        target[cur_len : cur_len + instruction_len] = [IGNORE_INDEX] * instruction_len
        cur_len += round_len
    target[cur_len:] = [IGNORE_INDEX] * max(0, len(target) - cur_len)
    if cur_len != total_len:
        agree = min(cur_len, total_len)
        raise TokenizationMismatch(rendering, total_len, cur_len, agree, -1)
    return target
