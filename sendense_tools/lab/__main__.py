from sendense_tools.lab.cli import main

main()
