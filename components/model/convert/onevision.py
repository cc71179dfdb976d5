"""LLaVA-OneVision layouts: llava-hf/llava-onevision-*-hf and lmms-lab/llava-onevision-*."""
