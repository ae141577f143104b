"""Fine-tuned class-token VAR weights shipped with ddbench (see digits_hieramp.json)."""
