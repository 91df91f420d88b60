"""Developer tools: the dvc.yaml deps generator."""
