"""Templates, tokenization and label masking with REAL tokenizers (assets/tokenizers), ids pinned.

Llama/Vicuna (LLaVA-1.5's vocabulary, legacy and non-legacy), GPT-2 and SmolLM2-135M-Instruct (ChatML). The key
property everywhere: the supervised tokens decode to exactly the assistant replies plus their end-of-turn token,
and anything that would make that false raises instead of silently masking the whole sample (LLaVA's bug).
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from components.data.conversation import (
    IGNORE_INDEX,
    IMAGE_TOKEN_INDEX,
    VICUNA_V1_SYSTEM,
    ContextTooLong,
    ConversationError,
    Encoded,
    NoSupervisedTokens,
    TokenizationMismatch,
    check_fits,
    encode_conversation,
    expand_image_labels,
    expand_image_placeholders,
    llava_v1_reference_labels,
    tokenize_with_image,
    truncate,
)
from components.data.tokenizers import (
    LLAMA_TOKENIZER_CONFIG,
    _fast,
    add_image_token,
    convert_llama_tokenizer_js,
    load_gpt2_tokenizer,
    load_llama_tokenizer,
    load_smollm2_tokenizer,
    write_tokenizer_dir,
)

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "tokenizers"

# Golden ids (offline_assets.md; checked against the reference Llama/GPT-2 tokenizers).
LLAMA_HELLO = [1, 15043, 3186]
LLAMA_SYSTEM_START = [1, 319, 13563, 1546, 263, 12758]
LLAMA_ASSISTANT_COLON = [319, 1799, 9047, 13566, 29901]  # ▁A SS IST ANT :
LLAMA_USER_COLON = [3148, 1001, 29901]  # ▁US ER :
LLAMA_SPACE, LLAMA_NEWLINE, LLAMA_EOS = 29871, 13, 2  # "▁", <0x0A>, </s>
GPT2_HELLO = [15496, 995]
SMOL_HELLO = [19556, 905]

CAPTION = [
    {"from": "human", "value": "Describe the image concisely.\n<image>"},
    {"from": "gpt", "value": "A red circle on a white background."},
]
SINGLE = [{"from": "human", "value": "<image>\nWhat shape is it?"}, {"from": "gpt", "value": "A circle."}]
MULTI = [
    {"from": "human", "value": "What is in the image?\n<image>"},
    {"from": "gpt", "value": "A red circle and a blue square."},
    {"from": "human", "value": "How many shapes are there?"},
    {"from": "gpt", "value": "There are 2 shapes."},
    {"from": "human", "value": "Which one is larger?"},
    {"from": "gpt", "value": "The square is larger than the circle, by about 30%."},
]
TEXT_ONLY = [
    {"from": "human", "value": "Say hello."},
    {"from": "gpt", "value": "Hello world"},
    {"from": "human", "value": "Again"},
    {"from": "gpt", "value": "Hello  world, again!"},
]


@pytest.fixture(scope="session")
def llama():
    return load_llama_tokenizer(ASSETS / "llama")


@pytest.fixture(scope="session")
def llama_nonlegacy():
    return load_llama_tokenizer(ASSETS / "llama", legacy=False)


@pytest.fixture(scope="session")
def gpt2():
    return load_gpt2_tokenizer(ASSETS / "gpt2")


@pytest.fixture(scope="session")
def smol():
    return load_smollm2_tokenizer(ASSETS / "smollm2")


def spans(enc: Encoded) -> list[list[int]]:
    """Maximal runs of supervised ids."""
    out, cur = [], []
    for tok, lab in zip(enc.input_ids, enc.labels, strict=True):
        if lab != IGNORE_INDEX:
            assert lab == tok
            cur.append(tok)
        elif cur:
            out.append(cur)
            cur = []
    return out + ([cur] if cur else [])


def replies(conv) -> list[str]:
    return [t["value"] for t in conv if t["from"] == "gpt"]


# ------------------------------------------------------------------------------------------ tokenizer goldens


def test_llama_golden_ids(llama, llama_nonlegacy):
    for tok in (llama, llama_nonlegacy):
        assert tok("Hello world").input_ids == LLAMA_HELLO
        assert tok(VICUNA_V1_SYSTEM).input_ids[:6] == LLAMA_SYSTEM_START
        assert tok("ASSISTANT:", add_special_tokens=False).input_ids == LLAMA_ASSISTANT_COLON
        assert tok.convert_ids_to_tokens(LLAMA_ASSISTANT_COLON) == ["▁A", "SS", "IST", "ANT", ":"]
        assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id, len(tok)) == (1, 2, 0, 32000)
        assert tok.decode(tok("Hello  world, again!").input_ids, skip_special_tokens=True) == "Hello  world, again!"
    # after a special token: legacy keeps SentencePiece's dummy "▁" (▁US ER), non-legacy does not (USER)
    assert llama("</s>USER:", add_special_tokens=False).input_ids == [LLAMA_EOS, *LLAMA_USER_COLON]
    assert llama_nonlegacy("</s>USER:", add_special_tokens=False).input_ids == [LLAMA_EOS, 11889, 29901]


def test_llama_asset_shape():
    data = json.loads((ASSETS / "llama" / "tokenizer.json").read_text())
    assert len(data["model"]["vocab"]) == 32000 and len(data["model"]["merges"]) == 61249
    assert data["model"]["byte_fallback"] is True and data["pre_tokenizer"] is None


def test_llama_conversion_from_the_npm_bundle_round_trips(tmp_path):
    """Re-encode the asset the way llama-tokenizer-js stores it, convert it back: the same tokenizer.json."""
    asset = json.loads((ASSETS / "llama" / "tokenizer.json").read_text())
    vocab = sorted(asset["model"]["vocab"], key=asset["model"]["vocab"].get)
    index = {piece: i for i, piece in enumerate(vocab)}
    pairs = [index[p] for merge in asset["model"]["merges"] for p in merge]
    vocab_b64 = base64.b64encode("\n".join(vocab).encode()).decode()
    merges_b64 = base64.b64encode(struct.pack(f"<{len(pairs)}H", *pairs)).decode()
    js = f"const llama_vocab_base64 = \"{vocab_b64}\";\nconst llama_merges_binary = '{merges_b64}';\n"
    (tmp_path / "llama-tokenizer.js").write_text(js)
    tok = convert_llama_tokenizer_js(tmp_path / "llama-tokenizer.js")
    out = write_tokenizer_dir(tok, tmp_path / "out", LLAMA_TOKENIZER_CONFIG)
    assert json.loads((out / "tokenizer.json").read_text()) == asset
    config = json.loads((ASSETS / "llama" / "tokenizer_config.json").read_text())
    assert json.loads((out / "tokenizer_config.json").read_text()) == config


def test_gpt2_and_smollm2_golden_ids(gpt2, smol):
    assert gpt2("Hello world").input_ids == GPT2_HELLO
    assert (gpt2.eos_token_id, len(gpt2)) == (50256, 50257)
    assert smol("Hello world").input_ids == SMOL_HELLO
    assert smol.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2]
    assert len(smol) == 49152
    assert smol.eos_token == "<|im_end|>"
    assert smol("2024", add_special_tokens=False).input_ids == [34, 32, 34, 36]  # digits one by one


def test_add_image_token_is_idempotent_and_never_split(llama, gpt2, smol):
    for tok, expected in ((llama, 32000), (gpt2, 50257), (smol, 49152)):
        tok = _copy(tok)
        assert add_image_token(tok) == expected == add_image_token(tok)
        assert len(tok) == expected + 1
        ids = tok("look: <image>\nhere", add_special_tokens=False).input_ids
        assert ids.count(expected) == 1
        assert tok.convert_ids_to_tokens(expected) == "<image>"


def _copy(tok):
    """A fresh tokenizer with the same backend (session fixtures must not be mutated)."""
    clone = _fast(
        Tokenizer.from_str(tok.backend_tokenizer.to_str()),
        bos_token=tok.bos_token,
        eos_token=tok.eos_token,
        unk_token=tok.unk_token,
        pad_token=tok.pad_token,
    )
    clone.chat_template = tok.chat_template
    return clone


# ------------------------------------------------------------------------------------------------ vicuna_v1


@pytest.mark.parametrize("conv", [SINGLE, MULTI, TEXT_ONLY], ids=["single", "multi", "text"])
@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "nonlegacy"])
def test_vicuna_masks_exactly_the_replies(conv, legacy, llama, llama_nonlegacy):
    tok = llama if legacy else llama_nonlegacy
    enc = encode_conversation(conv, tok, "vicuna_v1")
    got = spans(enc)
    assert len(got) == len(replies(conv))
    for span, reply in zip(got, replies(conv), strict=True):
        assert span[-1] == LLAMA_EOS
        assert tok.decode(span) == reply + "</s>"
    # every supervised span is preceded by "ASSISTANT:"; the reply's leading space is inside its first piece
    labels = enc.labels
    starts = [i for i in range(1, len(labels)) if labels[i] != IGNORE_INDEX and labels[i - 1] == IGNORE_INDEX]
    for i in starts:
        assert enc.input_ids[i - 5 : i] == LLAMA_ASSISTANT_COLON
        assert tok.convert_ids_to_tokens(enc.input_ids[i]).startswith("▁")
    assert enc.input_ids[0] == 1 and enc.labels[0] == IGNORE_INDEX
    assert enc.num_truncated == 0
    # same ids as tokenizing the whole rendering in one go (text-only: no chunking at all)
    if "<image>" not in enc.rendering:
        assert enc.input_ids == tok(enc.rendering).input_ids
    # and the same labels as LLaVA's preprocess_v1 (with its legacy fix): the -2 / -1 offsets, reproduced
    assert llava_v1_reference_labels(enc.rendering, tok, legacy=legacy) == enc.labels


def test_vicuna_rendering_is_llavas_prompt(llama):
    enc = encode_conversation(MULTI[:4], llama, "vicuna_v1")
    assert enc.rendering == (
        VICUNA_V1_SYSTEM + " USER: <image>\nWhat is in the image? ASSISTANT: A red circle and a blue square.</s>"
        "USER: How many shapes are there? ASSISTANT: There are 2 shapes.</s>"
    )


def test_llava_without_legacy_fix_masks_everything_we_do_not(llama_nonlegacy):
    """The LLaVA bug (issues #661/#1166): a non-legacy tokenizer without the -1 fix shifts every later round;
    LLaVA then sets all labels to IGNORE_INDEX and trains on nothing. Our port raises; our encoder is unaffected."""
    enc = encode_conversation(MULTI, llama_nonlegacy, "vicuna_v1")
    with pytest.raises(TokenizationMismatch) as err:
        llava_v1_reference_labels(enc.rendering, llama_nonlegacy, legacy=False, apply_legacy_fix=False)
    assert (err.value.expected_length, err.value.actual_length) == (len(enc.input_ids), len(enc.input_ids) + 2)
    assert enc.num_supervised > 0


def test_sentencepiece_space_handling_explains_llavas_minus_two(llama):
    """Why LLaVA's instruction_len is len(tok("... ASSISTANT: ")) - 2: <s>, and the trailing space's lone "▁"."""
    standalone = llama("USER: hi ASSISTANT: ").input_ids
    assert standalone[0] == 1 and standalone[-6:] == [*LLAMA_ASSISTANT_COLON, LLAMA_SPACE]
    in_context = llama("USER: hi ASSISTANT: Yes").input_ids
    assert in_context[: len(standalone) - 1] == standalone[:-1]  # the "▁" is not there in context ...
    assert llama.convert_ids_to_tokens(in_context[len(standalone) - 1]) == "▁Yes"  # ... it is part of "▁Yes"
    enc = encode_conversation([{"from": "human", "value": "hi"}, {"from": "gpt", "value": "Yes"}], llama, "vicuna_v1")
    first = enc.labels.index(next(lab for lab in enc.labels if lab != IGNORE_INDEX))
    assert first == len(llama(enc.rendering.split(" ASSISTANT: ")[0] + " ASSISTANT: ").input_ids) - 1


def test_vicuna_generation_prompt_is_the_eval_prompt(llama):
    q = [{"from": "human", "value": "What is it?\nAnswer the question using a single word or phrase.\n<image>"}]
    enc = encode_conversation(q, llama, "vicuna_v1", add_generation_prompt=True)
    assert enc.rendering == (
        VICUNA_V1_SYSTEM + " USER: <image>\nWhat is it?\nAnswer the question using a single word or phrase. ASSISTANT:"
    )
    assert enc.num_supervised == 0 and enc.input_ids[-5:] == LLAMA_ASSISTANT_COLON
    with pytest.raises(ConversationError, match="ends with a human turn"):
        encode_conversation(q, llama, "vicuna_v1")
    with pytest.raises(ConversationError, match="needs a conversation that ends with a human"):
        encode_conversation(SINGLE, llama, "vicuna_v1", add_generation_prompt=True)


def test_vicuna_with_other_end_tokens(gpt2, smol):
    with pytest.raises(ConversationError, match="end_of_turn"):  # "</s>" is 3 text pieces for GPT-2
        encode_conversation(SINGLE, gpt2, "vicuna_v1")
    for tok in (gpt2, smol):
        enc = encode_conversation(MULTI, tok, "vicuna_v1", end_of_turn=tok.eos_token)
        assert [tok.decode(s) for s in spans(enc)] == [" " + r + tok.eos_token for r in replies(MULTI)]
        assert enc.input_ids[:5] == tok(VICUNA_V1_SYSTEM).input_ids[:5]  # neither adds a BOS
        assert enc.input_ids.count(IMAGE_TOKEN_INDEX) == 1


# -------------------------------------------------------------------------------------------------- <image>


def test_image_placeholder_once_in_front_with_llava_ids(llama):
    enc = encode_conversation(MULTI, llama, "vicuna_v1")
    assert enc.input_ids.count(IMAGE_TOKEN_INDEX) == 1 and enc.image_positions == [enc.input_ids.index(-200)]
    p = enc.image_positions[0]
    # LLaVA's tokenizer_image_token: "... USER: " then the image then "\nWhat": ▁US ER : ▁ [-200] ▁ <0x0A> What
    assert enc.input_ids[p - 4 : p + 4] == [*LLAMA_USER_COLON, LLAMA_SPACE, -200, LLAMA_SPACE, LLAMA_NEWLINE, 5618]
    assert enc.input_ids[:p] == llama(VICUNA_V1_SYSTEM + " USER: ").input_ids
    assert enc.labels[p] == IGNORE_INDEX
    # a 558K-style trailing marker and a leading one give the same sample
    front = [{"from": "human", "value": "<image>\nWhat is in the image?"}, *MULTI[1:]]
    assert encode_conversation(front, llama, "vicuna_v1") == enc


def test_image_token_id_can_be_the_added_special_token(llama):
    tok = _copy(llama)
    image_id = add_image_token(tok)
    enc = encode_conversation(SINGLE, tok, "vicuna_v1", image_token_id=image_id)
    ref = encode_conversation(SINGLE, llama, "vicuna_v1")
    assert enc.input_ids == [image_id if t == IMAGE_TOKEN_INDEX else t for t in ref.input_ids]
    assert enc.labels == ref.labels and enc.image_positions == ref.image_positions
    # with <image> registered, the one-call tokenization agrees with LLaVA's chunked one (legacy Llama)
    assert tok(enc.rendering).input_ids == enc.input_ids


def test_expansion_gives_each_placeholder_its_own_run_of_visual_slots():
    ids = [1, IMAGE_TOKEN_INDEX, 5, IMAGE_TOKEN_INDEX, 6]
    labels = [IGNORE_INDEX, IGNORE_INDEX, 5, IGNORE_INDEX, 6]
    assert expand_image_placeholders(ids, [2, 3], 99) == [1, 99, 99, 5, 99, 99, 99, 6]
    assert expand_image_labels(labels, ids, [2, 3]) == [IGNORE_INDEX] * 3 + [5] + [IGNORE_INDEX] * 3 + [6]
    assert expand_image_placeholders([1, 2], [], 99) == [1, 2]
    with pytest.raises(ValueError, match="2 image placeholder"):
        expand_image_placeholders(ids, [4], 99)


def test_text_only_has_no_placeholder(llama):
    enc = encode_conversation(TEXT_ONLY, llama, "vicuna_v1")
    assert enc.image_positions == [] and IMAGE_TOKEN_INDEX not in enc.input_ids
    with pytest.raises(ConversationError, match="has_image=True"):
        encode_conversation(TEXT_ONLY, llama, "vicuna_v1", has_image=True)
    with pytest.raises(ConversationError, match="has_image=False"):
        encode_conversation(SINGLE, llama, "vicuna_v1", has_image=False)


@pytest.mark.parametrize(
    "conv, match",
    [
        ([{"from": "human", "value": "<image> a <image>"}, {"from": "gpt", "value": "b"}], "2 <image> markers"),
        ([{"from": "human", "value": "a"}, {"from": "gpt", "value": "<image>"}], "in a assistant turn"),
        ([{"from": "gpt", "value": "a"}, {"from": "human", "value": "b"}], "expected the user"),
        ([{"from": "human", "value": "a"}, {"from": "human", "value": "b"}], "expected the assistant"),
        ([{"from": "bot", "value": "a"}], "unknown speaker"),
        ([{"from": "system", "value": "a"}, *SINGLE], "system turn"),
        ([{"from": "human"}], "not a"),
        ([], "empty"),
    ],
)
def test_malformed_conversations_raise(conv, match, llama):
    with pytest.raises(ConversationError, match=match):
        encode_conversation(conv, llama, "vicuna_v1")


def test_unknown_template(llama):
    with pytest.raises(ConversationError, match="unknown template"):
        encode_conversation(SINGLE, llama, "llava_llama_2")


# ---------------------------------------------------------------------------------------------------- plain


def test_plain_keeps_only_the_caption(llama, gpt2):
    enc = encode_conversation(CAPTION, llama, "plain")
    caption = CAPTION[1]["value"]
    assert enc.rendering == "<image>" + caption + "\n"  # the human prompt is dropped
    assert enc.input_ids[:2] == [1, IMAGE_TOKEN_INDEX] and enc.labels[:2] == [IGNORE_INDEX] * 2
    assert enc.input_ids[2:] == llama(caption + "\n", add_special_tokens=False).input_ids
    assert enc.input_ids[-1] == LLAMA_NEWLINE and LLAMA_EOS not in enc.input_ids
    assert enc.labels[2:] == enc.input_ids[2:]
    assert llama.decode(spans(enc)[0]) == caption + "\n"
    g = encode_conversation(CAPTION, gpt2, "plain")  # no BOS: the placeholder comes first
    assert g.input_ids[0] == IMAGE_TOKEN_INDEX and gpt2.decode(spans(g)[0]) == caption + "\n"
    inference = encode_conversation(CAPTION[:1], llama, "plain", add_generation_prompt=True)
    assert inference.input_ids == [1, IMAGE_TOKEN_INDEX]


def test_plain_rejects_non_caption_samples(llama):
    with pytest.raises(ConversationError, match="plain needs exactly"):
        encode_conversation(TEXT_ONLY[:2], llama, "plain")
    with pytest.raises(ConversationError, match="plain needs exactly"):
        encode_conversation(MULTI, llama, "plain")


# -------------------------------------------------------------------------------------------- chat_template


def test_chat_template_smollm2(smol):
    enc = encode_conversation(MULTI, smol, "chat_template")
    assert enc.rendering.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert "<|im_start|>user\n<image>\nWhat is in the image?<|im_end|>\n" in enc.rendering
    # supervised: each assistant content and its <|im_end|> (id 2), not the "\n" after it nor "assistant\n"
    assert [smol.decode(s) for s in spans(enc)] == [r + "<|im_end|>" for r in replies(MULTI)]
    assert all(s[-1] == 2 for s in spans(enc))
    assert enc.input_ids.count(IMAGE_TOKEN_INDEX) == 1 and len(enc.image_positions) == 1
    for p in (i for i, t in enumerate(enc.input_ids) if t == 2):
        if enc.labels[p] != IGNORE_INDEX:
            assert enc.labels[p + 1] == IGNORE_INDEX  # the template's "\n"


def test_chat_template_ids_equal_hf_apply_chat_template(smol):
    enc = encode_conversation(TEXT_ONLY, smol, "chat_template")
    messages = [{"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]} for t in TEXT_ONLY]
    assert enc.input_ids == smol.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    sys_first = [{"from": "system", "value": "Be brief."}, *TEXT_ONLY]
    enc = encode_conversation(sys_first, smol, "chat_template")
    assert enc.rendering.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert [smol.decode(s) for s in spans(enc)] == [r + "<|im_end|>" for r in replies(TEXT_ONLY)]
    gen = encode_conversation(TEXT_ONLY[:3], smol, "chat_template", add_generation_prompt=True)
    assert gen.rendering.endswith("<|im_start|>user\nAgain<|im_end|>\n<|im_start|>assistant\n")


def test_chat_template_must_be_prefix_stable(smol):
    tok = _copy(smol)  # a template that renders the last turn differently (as "thinking" templates do)
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
        "{% if loop.last %}<|im_end|>{% else %}<|im_end|>\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}\n<|im_start|>assistant\n{% endif %}"
    )
    with pytest.raises(ConversationError, match="prefix-stable"):
        encode_conversation(TEXT_ONLY, tok, "chat_template")
    tok.chat_template = None
    with pytest.raises(ConversationError, match="no chat_template"):
        encode_conversation(TEXT_ONLY, tok, "chat_template")


def test_chat_template_without_end_of_turn_raises(smol):
    tok = _copy(smol)
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    with pytest.raises(ConversationError, match="end-of-turn id 2 not found"):
        encode_conversation(TEXT_ONLY, tok, "chat_template")


# ------------------------------------------------------------------------------------------------ mismatch


@pytest.fixture(scope="session")
def llama_colon_space_merge():
    """The Llama vocabulary plus one top-priority merge ":" + "▁" -> ":▁" that crosses the prompt/reply boundary."""
    data = json.loads((ASSETS / "llama" / "tokenizer.json").read_text())
    data["model"]["vocab"][":▁"] = 32000
    data["model"]["merges"].insert(0, [":", "▁"])
    tok = Tokenizer.from_str(json.dumps(data))
    return _fast(tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>")


def test_boundary_crossing_merge_raises_tokenization_mismatch(llama_colon_space_merge):
    tok = llama_colon_space_merge
    with pytest.raises(TokenizationMismatch) as err:
        encode_conversation(SINGLE, tok, "vicuna_v1")
    e = err.value
    assert e.rendering.endswith("ASSISTANT: A circle.</s>") and "Rendering:" in str(e)
    assert e.expected_length == len(tokenize_with_image(e.rendering, tok, prefix=[1]))
    assert e.agree_length == e.actual_length - 1  # all but the last ":" agree; in context it is ":▁"
    assert str(e.expected_length) in str(e) and str(e.actual_length) in str(e)


def test_llava_length_check_misses_what_the_id_check_catches(llama_colon_space_merge):
    """LLaVA's accounting only compares lengths: here they agree, and it silently supervises prompt text."""
    rendering = VICUNA_V1_SYSTEM + " USER: <image>\nWhat shape is it? ASSISTANT: A circle.</s>"
    labels = llava_v1_reference_labels(rendering, llama_colon_space_merge, legacy=True)
    first = next(lab for lab in labels if lab != IGNORE_INDEX)
    assert llama_colon_space_merge.convert_ids_to_tokens(first) == ":▁"  # prompt ":" + reply space, supervised


def test_llava_reference_mismatch_example_is_loud(llama):
    # a rendering whose rounds do not add up (LLaVA would print a warning and mask all)
    bad = VICUNA_V1_SYSTEM + " USER: hi ASSISTANT: yes</s>USER: more ASSISTANT: no ASSISTANT: x</s>"
    with pytest.raises(TokenizationMismatch):
        llava_v1_reference_labels(bad, llama, legacy=True)


# ------------------------------------------------------------------------------------------------ truncation


def test_truncation_cuts_text_from_the_right_and_reports(llama):
    full = encode_conversation(MULTI, llama, "vicuna_v1")
    cut = encode_conversation(MULTI, llama, "vicuna_v1", max_length=len(full.input_ids) - 7)
    assert cut.num_truncated == 7
    assert cut.input_ids == full.input_ids[:-7] and cut.labels == full.labels[:-7]
    assert encode_conversation(MULTI, llama, "vicuna_v1", max_length=len(full.input_ids)) == full


def test_truncation_with_visual_tokens(llama):
    full = encode_conversation(MULTI, llama, "vicuna_v1")
    n_visual = 576
    needed = len(full.input_ids) - 1 + n_visual
    assert full.expanded_length(n_visual) == needed
    check_fits(full, n_visual, needed)
    with pytest.raises(ContextTooLong, match=f"{needed} positions .* max_length {needed - 1}") as err:
        check_fits(full, n_visual, needed - 1)
    assert (err.value.length, err.value.max_length) == (needed, needed - 1)
    cut = encode_conversation(MULTI, llama, "vicuna_v1", max_length=needed - 10, num_visual_tokens=n_visual)
    assert cut.num_truncated == 10 and cut.expanded_length(n_visual) == needed - 10
    check_fits(cut, n_visual, needed - 10)


def test_truncation_never_cuts_the_image(llama):
    full = encode_conversation(MULTI, llama, "vicuna_v1")
    p = full.image_positions[0]
    with pytest.raises(ContextTooLong, match="cut into the image"):
        truncate(full, max_length=p + 1)  # would keep the placeholder as the very last id, nothing after
    with pytest.raises(ContextTooLong, match="cut into the image"):
        truncate(full, max_length=p + 576, num_visual_tokens=576)
    with pytest.raises(ContextTooLong):  # generation prompts are never truncated, only checked
        encode_conversation(
            MULTI[:1], llama, "vicuna_v1", add_generation_prompt=True, max_length=p + 2, num_visual_tokens=576
        )


def test_all_masked_sample_raises(llama):
    full = encode_conversation(MULTI, llama, "vicuna_v1")
    first = next(i for i, lab in enumerate(full.labels) if lab != IGNORE_INDEX)
    with pytest.raises(NoSupervisedTokens, match="leaves no supervised token"):
        encode_conversation(MULTI, llama, "vicuna_v1", max_length=first)
    kept = encode_conversation(MULTI, llama, "vicuna_v1", max_length=first + 1)
    assert kept.num_supervised == 1


def test_truncation_text_only(gpt2):
    enc = encode_conversation(TEXT_ONLY, gpt2, "vicuna_v1", end_of_turn=gpt2.eos_token, max_length=40)
    assert len(enc.input_ids) == 40 and enc.num_truncated > 0 and enc.image_positions == []
