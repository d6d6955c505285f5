"""Local tooling, never shipped in a function: the local stack and emulators, provisioning,
synthetic data, fault injection, processor tests and ``cascade init``.
"""
