"""The training engine (fit: resume, logging, early stopping) and the metrics it and the evaluations use."""
