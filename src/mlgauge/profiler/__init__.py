"""CPU deep-learning profiling: oneDNN verbose logs, PyTorch profiler traces, and how they join."""
