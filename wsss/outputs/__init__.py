"""What the pipeline hands out: predictions on new images, exported models, the report figures, the methods comparison table."""
