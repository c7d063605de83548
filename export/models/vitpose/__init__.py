"""ViTPose-H (Xu et al., NeurIPS 2022; ViTAE-Transformer/ViTPose): ViT-H backbone + deconvolution heatmap head."""
