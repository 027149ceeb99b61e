"""I/O to other systems (KubeVirt, CDI, CSI, S3, IPMI, PXE, databases)."""
