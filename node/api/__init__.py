"""The node's client-facing endpoints: JSON-RPC methods and envelope, WebSocket subscriptions, and the ASGI
apps Hypercorn serves. Above p2p, below the server (`run_node`), which wires it and which it never imports."""
