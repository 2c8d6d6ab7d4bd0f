"""The consensus core: a pure, deterministic PBFT state machine (events in, actions out).

It never imports trio, plyvel, prometheus_client, time, random or secrets, nor
`node` or `storage`. Signatures arrive through the `Crypto` protocol.
"""
