"""Monitoring glue: the Grafana dashboard built from `peirce.metrics.CATALOGUE` and a
real-Prometheus harness (`promtest`) that tests its queries against live exporters."""
