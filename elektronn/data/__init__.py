"""Data for elektronn: a seeded synthetic EM-like volume generator (:mod:`.synthetic`)."""
