"""Data files of the VAR generator (the release key/shape manifest)."""
