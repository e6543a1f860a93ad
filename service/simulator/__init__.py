"""The provider simulator: carriers, an SMS gateway, an ARS call centre and a PASS app that run
offline, mounted under `/sim` (contract section 5). A development tool, not a provider.

`app.Simulator` assembles `carriers` (subscriber and add-on checks, the SMS gateway and the
phones' inboxes) and `phone` (the call centre and the PASS app, which report to the service's
webhook, signed, over real HTTP). `magic` holds the magic-number rule; `bounded` the containers
that keep its memory bounded however many phones it serves.
"""
