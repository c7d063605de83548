from hmr_trt.runtime.cli import main

main()
