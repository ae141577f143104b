"""The shipped digits DiT weights (package data): see ddbench.generators.dit.shipped."""
