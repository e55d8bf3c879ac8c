"""Checkpoint files: safe loading (`safe_load`: `load_checkpoint`, the one reader of our own checkpoints, and the
readers of other code bases' files; nothing in a file ever runs, see docs/security.md) and the import of released
checkpoints into our format (`convert`). This package sits above `dlm.algos` (the import builds methods);
`safe_load` needs only torch, so every layer may use it. Nothing is imported here on purpose."""
