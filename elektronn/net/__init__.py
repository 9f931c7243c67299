"""The network layer library (the ELEKTRONN 1.0 ``elektronn.net`` API)."""
