"""Model layer: trees, snapshots and refs, stored as objects and small files."""
