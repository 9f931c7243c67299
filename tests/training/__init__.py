"""Tests of elektronn.training."""
