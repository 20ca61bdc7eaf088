"""The REST API (FastAPI): authentication, errors, routes and the event stream."""
