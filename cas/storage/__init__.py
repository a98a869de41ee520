"""Storage layer: objects on plain files and in packs, indexed in LMDB."""
