"""mlgauge's own operators: faster versions of hot spots that profiling finds, same semantics."""

from mlgauge.ops.focal_loss import reference_sigmoid_focal_loss, sigmoid_focal_loss
from mlgauge.ops.robe import RobeEmbeddingBag, RobeHash, RobeTables, robe_embedding_bag, robe_locations

__all__ = [
    "RobeEmbeddingBag",
    "RobeHash",
    "RobeTables",
    "reference_sigmoid_focal_loss",
    "robe_embedding_bag",
    "robe_locations",
    "sigmoid_focal_loss",
]
