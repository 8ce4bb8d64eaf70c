"""Workflows and applications above evaluation: the shipped model's recipe, the demo, and the
web application of ``lorefd serve``."""
