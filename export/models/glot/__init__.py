"""GLoT (Shen et al., CVPR 2023; official code sxl142/GLoT): ``--model glot``.

``config.py`` the released configuration, ``model.py`` the inference graph with the official key
names, ``checkpoint.py`` the released-checkpoint reader, ``contract.py`` (torch-free) what the
pipeline needs to know, ``adapter.py`` the torch side the export job calls.
"""
