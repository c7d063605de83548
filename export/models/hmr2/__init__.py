"""HMR 2.0 (Goel et al., ICCV 2023; shubham-goel/4D-Humans): ViT-H backbone + cross-attention SMPL head."""
