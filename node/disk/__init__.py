"""What the node keeps safe on disk: the store's integrity checks, the guard that opens only a whole store,
the consensus safety file and durable file writes. Above ops, below txpool; it never imports the network."""
