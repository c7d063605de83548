from hmr_trt.engines.cli import main

main()
