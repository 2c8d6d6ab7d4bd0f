"""What operators see: the Prometheus metrics, the log lines (rate-limited where they repeat) and systemd's
notify protocol. Above chain, below every room that reports through it, none of which it may import."""
