from supportd.entrypoints.cli import main

main()
