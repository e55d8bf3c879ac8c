"""Checkpoints from elsewhere: safe loading of any checkpoint file (`safe_load`) and the import of released
checkpoints into our format (`convert`). This package sits above `dlm.algos` (the import builds methods);
`safe_load` needs only torch, so every layer may use it. Nothing is imported here on purpose."""
