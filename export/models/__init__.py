"""One folder per model: ``contract.py`` (torch-free), config, reference module, checkpoint loader,
export wrappers (``adapter.py``). ``hmr_trt.registry`` lists them."""
