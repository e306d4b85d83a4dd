"""Audits: turn any attack's member / non-member scores into comparable privacy metrics."""

from unseen.audit.auditor import AuditResult, audit_scores, clopper_pearson, empirical_epsilon, roc_curve

__all__ = ["AuditResult", "audit_scores", "clopper_pearson", "empirical_epsilon", "roc_curve"]
