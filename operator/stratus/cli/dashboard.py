"""`stratus dashboard`: the web console (stratus.services.dashboard), as the signed-in user."""

from __future__ import annotations

import click


@click.command()
@click.option("--host", envvar="STRATUS_DASHBOARD_HOST", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", envvar="STRATUS_DASHBOARD_PORT", default=8300, show_default=True, help="Port to listen on.")
@click.option("--tls-cert", envvar="STRATUS_DASHBOARD_TLS_CERT", type=click.Path(exists=True, dir_okay=False),
              help="Serve HTTPS with this certificate (cookies are then Secure).")
@click.option("--tls-key", envvar="STRATUS_DASHBOARD_TLS_KEY", type=click.Path(exists=True, dir_okay=False))
@click.option("--behind-tls-proxy", is_flag=True, envvar="STRATUS_DASHBOARD_BEHIND_TLS_PROXY",
              help="A TLS-terminating proxy is in front: mark cookies Secure anyway.")
@click.option("--session-lifetime", default=8 * 3600, show_default=True, help="Longest sign-in, in seconds (a token's own expiry ends it sooner).")
@click.option("--idle-timeout", default=3600, show_default=True, help="A sign-in unused this long ends, in seconds.")
@click.option("--discover-projects/--no-discover-projects", default=True, show_default=True,
              help="Offer, in the project switcher, the Projects naming the user as a member (read with the "
                   "dashboard's own credentials; each is checked as the user before it is shown).")
@click.option("--page-size", envvar="STRATUS_DASHBOARD_PAGE_SIZE", default=100, show_default=True,
              type=click.IntRange(1, 500), help="Rows per page of the server, volume, image and database lists.")
def dashboard(host: str, port: int, tls_cert: str | None, tls_key: str | None, behind_tls_proxy: bool,
              session_lifetime: int, idle_timeout: int, discover_projects: bool, page_size: int) -> None:
    """Serve the web console. It talks to the API server of the current kubeconfig (or the
    in-cluster one) with each signed-in user's own token, never its own."""
    import logging

    import uvicorn

    from ..drivers.userkube import Cluster
    from ..services.dashboard import Settings, create_app, discover_with_own_credentials

    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(Cluster.from_own_config(), tls=bool(tls_cert) or behind_tls_proxy, lifetime=session_lifetime,
                        idle=idle_timeout, discover=discover_with_own_credentials if discover_projects else None,
                        page_size=page_size)
    scheme = "https" if tls_cert else "http"
    click.echo(f"stratus dashboard on {scheme}://{host}:{port}/ (API server {settings.cluster.host})")
    # uvicorn's access log has paths only (no cookies, no tokens); kept at warning to stay quiet.
    uvicorn.run(create_app(settings), host=host, port=port, ssl_certfile=tls_cert, ssl_keyfile=tls_key,
                log_level="warning", proxy_headers=False)


#: Registered by stratus.cli.
COMMANDS = (dashboard,)
