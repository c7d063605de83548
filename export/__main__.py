from hmr_trt.export.cli import main

main()
