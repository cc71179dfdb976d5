"""Debug-size configurations: the real architecture at hidden sizes of 32-64, for tests and CPU smoke runs.

The geometry is real (patch 14, 336 px CLIP / 384 px SigLIP), so layouts, token counts and separators are
exactly those of the paper-scale model; only widths and depths shrink.
"""

from __future__ import annotations

from transformers import CLIPVisionConfig, LlamaConfig, SiglipVisionConfig

from components.compression import MLP, RESAMPLER, effective_compressor

from .modeling import LlavaUhdConfig


def tiny_vision_config(strategy: str = "uhd", hidden: int = 32, layers: int = 2):
    common = {"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": layers,
              "num_attention_heads": 2, "patch_size": 14}
    if strategy == "anyres":
        return SiglipVisionConfig(image_size=384, **common)
    return CLIPVisionConfig(image_size=336, projection_dim=hidden, **common)


def tiny_text_config(vocab_size: int, hidden: int = 64, layers: int = 2, tie: bool = False) -> LlamaConfig:
    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                       num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=16384, tie_word_embeddings=tie)


def tiny_llava_uhd_config(vocab_size: int, image_token_id: int, separator_ids: tuple[int, int],
                          compressor: str = RESAMPLER, strategy: str = "uhd", preset: str = "uhd-arxiv",
                          spatial_schema: bool = True, tie: bool = False, vision_hidden: int = 32,
                          vision_layers: int = 2, llm_hidden: int = 64, llm_layers: int = 2,
                          conversation: str = "vicuna_v1", overview_only: bool = False) -> LlavaUhdConfig:
    text = tiny_text_config(vocab_size, hidden=llm_hidden, layers=llm_layers, tie=tie)
    return LlavaUhdConfig(
        vision_config=tiny_vision_config(strategy, hidden=vision_hidden, layers=vision_layers).to_dict(),
        text_config=text.to_dict(),
        compressor=compressor,
        # The resamplers' default heads (llm_dim // 128) would be 0 at tiny widths; the MLP takes no options.
        compressor_kwargs={} if effective_compressor(compressor, strategy) == MLP else {"num_heads": 2},
        spatial_schema=spatial_schema,
        strategy=strategy,
        preset=preset,
        overview_only=overview_only,
        vision_feature_layer=-2 if strategy != "anyres" else -1,
        image_token_id=image_token_id,
        slice_separator_id=separator_ids[0],
        row_separator_id=separator_ids[1],
        tie_word_embeddings=tie,
        conversation=conversation,
    )
