"""Storage: a small key-value interface, its LevelDB and in-memory stores, and
the chain store built on top of it. Never imports `node` or `consensus`."""

from storage.kv import KeyValueStore, StorageError, StoreCorrupt, StoreLocked, WriteBatch

__all__ = ["KeyValueStore", "StorageError", "StoreCorrupt", "StoreLocked", "WriteBatch"]
