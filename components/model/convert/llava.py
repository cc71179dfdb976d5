"""LLaVA-1.5 layouts: liuhaotian/llava-v1.5-* (`--format llava`) and llava-hf/llava-1.5-*-hf (`--format llava-hf`)."""
