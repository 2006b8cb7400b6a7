"""Datasets: one VOC-layout contract (reader in ``dataset``) and the preparers that produce it."""
