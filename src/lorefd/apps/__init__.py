"""Workflows and applications above evaluation: the shipped model's recipe, the demo, the
paper's protocols end to end (:mod:`.protocols`: train, then evaluate) and the web application
of ``lorefd serve``."""
