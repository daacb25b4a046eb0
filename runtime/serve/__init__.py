"""`clipedge serve`: a local HTTP API over one loaded bundle (issue #35)."""
