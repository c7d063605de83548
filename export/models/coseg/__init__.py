"""The co-segmentation network (CVPR 2023): config, reference model, FDE, contract and adapter."""
