"""Data: the embedded shapes dataset, tokenizer, and the loader that builds global batches."""
