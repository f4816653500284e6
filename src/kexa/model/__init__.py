"""The K-EXAONE network: pure modules (no optimiser, no parallelism, no inference loop)."""
