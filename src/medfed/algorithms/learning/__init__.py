"""Federated learning: training plans, strategies, rounds, secure aggregation and DP."""
