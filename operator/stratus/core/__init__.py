"""Pure logic: no I/O, no Kubernetes client. Everything here is unit-tested with tables."""
