"""The pipeline's phases, named for what they do: classify, calibrate, held-out metrics, evaluate, pseudo labels, segment, gates, the dataset report."""
