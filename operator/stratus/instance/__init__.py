"""The instance manager: the program every Database Pod runs (``stratus instance <engine>``).

CloudNativePG's design: an agent inside the pod does the engine's local work, so the
operator never needs a shell in a container. It

1. prepares the data directory once (initdb / mariadb-install-db on an empty volume, a
   base backup of the primary for a replica, a restore from a Bucket for a restored
   Database), then
2. runs the engine as its child on ``STRATUS_PORT_<name>`` when set (the local pod runner)
   else on the container port, bound to ``STRATUS_LISTEN_HOST`` (default all addresses),
3. keeps the superuser's password equal to the Secret's (so a restored copy takes the new
   Database's password), and
4. answers the operator on the control port: ``GET /healthz``, ``POST /backups`` (start a
   backup into the Bucket the pod's environment names), ``GET /backups/<id>``.

When it runs as root (the local control plane runs it as the developer's user, often root),
PostgreSQL, which refuses root, is started as an unprivileged user; MariaDB is told
``--user=root``. In the engine's image it runs as the image's user and neither applies.

Exit: when the engine exits, the instance manager exits with its code; the pod's
``restartPolicy: Never`` leaves the restart (or a failover) to the operator.
"""
