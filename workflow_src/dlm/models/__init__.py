"""Backbones: the DiT of MDLM/DUO (bidirectional, adaLN time conditioning) and its causal variant for AR."""
