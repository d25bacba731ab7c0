from sendense_tools.cli import main

main()
