"""distillery: seed tasks in, a curated instruction-tuning dataset and a fine-tuned student out."""

__version__ = "0.1.0"
