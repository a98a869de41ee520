"""Operations over a store: ingest, verify, index rebuild."""
