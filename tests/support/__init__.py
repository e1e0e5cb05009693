"""Loopback servers and helpers the test suite (and the examples) run against."""
