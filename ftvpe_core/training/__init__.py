"""Fine-tuning: the LoRA training loop with its settings, presets and checkpoints (``finetune``), and a fine-tuning
run as a job of kind 'finetune' (``tuning``: submit, execute, resume, its parts on a Ray node).
"""
