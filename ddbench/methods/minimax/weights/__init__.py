"""The shipped Minimax fine-tune of the digits DiT (package data): see ddbench.methods.minimax.digits."""
