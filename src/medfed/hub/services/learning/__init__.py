"""Hub services of federated learning: blobs, training plans, model registry, round context."""
