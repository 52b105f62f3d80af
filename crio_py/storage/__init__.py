"""Storage: the shared layer store and overlay mounts of container root filesystems."""
