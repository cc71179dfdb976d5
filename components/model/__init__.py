"""Single-device model code; importing it registers LLaVA-UHD with the transformers Auto classes."""

from .modeling import LlavaUhdConfig, LlavaUhdForConditionalGeneration, separator_token_ids

__all__ = ["LlavaUhdConfig", "LlavaUhdForConditionalGeneration", "separator_token_ids"]
