"""Fine-tuning: model loading (Unsloth, falling back to transformers + PEFT), SFT, callbacks.

Everything here imports torch and friends lazily; it runs on the GPU worker.
"""
