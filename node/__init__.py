"""The alliance node: the trio shell around the consensus core, and the application."""
