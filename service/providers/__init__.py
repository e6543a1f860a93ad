"""Ports to the upstreams (carriers, SMS gateway) and their adapters.

A real provider's adapter is one new module implementing the protocols in `ports`.
"""
