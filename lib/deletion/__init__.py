"""Deletion requests: edits as reversible patches, and the hash-chained ledger of what was applied."""
