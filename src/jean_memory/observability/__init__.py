"""What operators see: one log line per request, and Prometheus metrics."""
