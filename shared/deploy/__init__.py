"""Deployment: the Terraform inputs derived from the definition and what a function bundle holds.
"""
