"""The chain's data and rules: transactions, blocks and their canonical encoding, Merkle trees, execution, the
ledger, proposals, proofs, the genesis and signatures. Pure of I/O machinery (no trio, sockets, metrics or
plyvel); it imports only errors, version, keys and config."""
