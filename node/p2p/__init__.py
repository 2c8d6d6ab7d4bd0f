"""The validators' network: the authenticated transport, peer sessions, transaction gossip, fetching a
proposal's missing transactions and block sync. Above the pipeline it feeds; it never imports api or server."""
