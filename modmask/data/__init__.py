"""Data sets of the experiments: generation, encoding to tensors, and sampling of batches."""
