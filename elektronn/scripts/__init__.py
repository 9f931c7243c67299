"""Command-line programs of elektronn (``elektronn-train``)."""
