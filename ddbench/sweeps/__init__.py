"""Grid files shipped with ddbench (the papers' tables) and the `ddbench sweep` commands."""
