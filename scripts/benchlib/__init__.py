"""Helpers of scripts/bench.py that are programs or sections of their own."""
