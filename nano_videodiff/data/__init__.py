"""Real video data: folders, manifests and shards."""
