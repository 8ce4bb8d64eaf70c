"""Models: the stage-1 MAE, the Xception wrapper, the registered stage-2 detectors (imported
with :mod:`lorefd.models.detectors`), the bundle and its ONNX graph.

Importing this package loads nothing heavy: the ONNX runtime path (:mod:`.graph`) runs
without torch.
"""
