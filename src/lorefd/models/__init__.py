"""Models: the stage-1 MAE, the Xception wrapper, and the registered stage-2 detectors."""

from lorefd.models import detectors  # noqa: F401  (registers "lre" and "baseline")
