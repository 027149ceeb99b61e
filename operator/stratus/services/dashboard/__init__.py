"""The dashboard (Horizon): a web console for the Stratus kinds, acting as the signed-in user.

Starlette + Jinja2, served by uvicorn (`stratus dashboard`). Every page is a Stratus kind
read with the user's token and every action one API call with it (see app.py); sign-in,
sessions, CSRF and security headers are in security.py; what pages show and what forms
send is pure (present.py). It never imports stratus.controllers.
"""

from .app import Settings, create_app, discover_with_own_credentials

__all__ = ["Settings", "create_app", "discover_with_own_credentials"]
