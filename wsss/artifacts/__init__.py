"""On-disk artifact formats between stages, in numpy-only modules (importing them pulls in no torch)."""
