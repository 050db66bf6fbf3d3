"""Re-encoding the corpus into versioned Milvus collections, the recall gate, promotion."""
