"""The organisation's rules, read from YAML policy files, and the decisions they imply."""
