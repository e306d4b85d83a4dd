"""Presenting results: terminal tables today (the HTML report builds on the same results.json)."""
