"""mlgauge's own operators: faster versions of hot spots that profiling finds, same semantics."""

from mlgauge.ops.focal_loss import reference_sigmoid_focal_loss, sigmoid_focal_loss

__all__ = ["reference_sigmoid_focal_loss", "sigmoid_focal_loss"]
