"""The `alliance` command line: running a node, testnets and localnets, client commands, checks and the
benchmark. The top of the tree, beside bench; no room below imports it."""
