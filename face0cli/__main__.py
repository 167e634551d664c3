from face0cli.cli.app import main

main()
