"""HTTP servers run by the operator: metrics exporter, boot server, dashboard."""
