"""Sinks: where events and views go (Prometheus metrics, reports, alerts, ...)."""
