"""Cryptography for federated learning: secure aggregation (pairwise masking, CKKS) and fixed-point encoding."""
