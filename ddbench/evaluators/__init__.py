"""Evaluation protocols, registered through the `ddbench.evaluators` entry points."""
