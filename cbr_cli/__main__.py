from cbr_cli.cli import main

main()
