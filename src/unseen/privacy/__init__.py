"""Privacy mechanisms, accountants and the typed guarantee every run reports."""

from unseen.privacy.guarantee import PrivacyGuarantee

__all__ = ["PrivacyGuarantee"]
