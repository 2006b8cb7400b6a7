"""Plumbing: command-line stages, launching, GPU leases, distributed sessions, config validation, typed stage configs, atomic I/O, errors, progress lines."""
