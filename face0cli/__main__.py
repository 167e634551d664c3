from face0cli.cli import main

main()
