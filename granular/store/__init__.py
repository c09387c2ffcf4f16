"""Where files go and how they are written: project paths, atomic writes, content digests."""
