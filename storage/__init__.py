"""Where finished recordings and their metadata are kept: the SQLite index."""
