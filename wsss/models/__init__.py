"""Networks: torchvision ResNet backbones (``backbone``) and the VWL classifier (``vwl``)."""
