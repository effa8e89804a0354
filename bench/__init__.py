"""Benchmarks: the gateway against a bare reference proxy (and LiteLLM), and config-scale costs.

``python bench/run.py [--quick] [--litellm]``; see ``bench/README.md``.
"""
