"""The `uhd` console script and its sub-commands: parse arguments, call components/, print (cli/README.md)."""
