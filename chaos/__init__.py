"""Resilience drills: Toxiproxy between validators, process faults, a bank workload, checkers."""
