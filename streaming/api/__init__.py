"""`ot api`: the HTTP server. The webhook gateway router (devices push readings) lives here, and
the operator router will sit beside it in the same ASGI app.

Kept free of imports: `streaming.settings` reads `streaming.api.keys` without pulling in FastAPI.
"""
