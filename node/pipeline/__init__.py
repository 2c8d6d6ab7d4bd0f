"""The trio driver around the consensus core: it feeds the replica its events and carries out its actions in
order. Above txpool, below p2p and the API, which it reaches only through what it is given."""
