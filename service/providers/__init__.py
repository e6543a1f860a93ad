"""The upstreams: their ports (`ports`), the reference format sent to them (`references`), and
their adapters (`simulator`, the client of the development simulator).

A real provider's adapter is one new module implementing the protocols in `ports`.
"""
