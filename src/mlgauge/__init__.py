"""mlgauge: fair, reproducible ML performance measurement, the MLPerf way."""

__version__ = "0.1.0"
