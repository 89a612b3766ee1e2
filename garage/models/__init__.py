"""Models: loading (Unsloth, or transformers + PEFT), LoRA, chat templates."""
