"""Rank-DistiLLM data-generation pipeline: first stages, LLM teacher, dataset, student."""

__version__ = "0.1.0"
