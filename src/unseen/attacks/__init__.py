"""Attacks that measure leakage; each yields scores for :mod:`unseen.audit` to turn into metrics."""

from unseen.attacks.membership import loss_scores

__all__ = ["loss_scores"]
