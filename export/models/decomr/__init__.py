"""DecoMR (Zeng et al., CVPR 2020; official code zengwang430521/DecoMR): one crop -> IUV image ->
UV location map -> mesh vertices. hmr-trt's first ``frame``-family model."""
