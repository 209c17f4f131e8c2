"""The verifiable log used by hub and node: RFC 9162 Merkle tree, proofs, signed checkpoints."""
