#!/bin/bash
# Entrypoint of netpoint-prod-ssh:<major> (see scripts/test-prereqs.sh): a
# "production" host for the tests that is reachable only over SSH, as a real one
# is. OpenSSH's server listens on port 22 (the only port to publish); PostgreSQL
# listens on the container's own loopback only; the media are a directory on the
# host (NETPOINT_MEDIA, default /srv/netpoint/media).
#
#   env   SSH_AUTHORIZED_KEY  public key that may log in as SSH_USER (required)
#         SSH_USER            login account (default: deploy)
#         everything the postgres entrypoint takes (POSTGRES_PASSWORD, ...)
#   args  as the postgres entrypoint's (testcontainers passes `-c fsync=off`)
#
# Run it with `docker run --init`: sshd's sessions leave orphans that PID 1 reaps,
# and a postmaster as PID 1 takes a reaped stranger for a crashed backend.
set -Eeuo pipefail

user=${SSH_USER:-deploy}
media=${NETPOINT_MEDIA:-/srv/netpoint/media}
[ -n "${SSH_AUTHORIZED_KEY:-}" ] || {
    echo "ssh-prod-entrypoint: set SSH_AUTHORIZED_KEY" >&2
    exit 2
}
id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$user"
home=$(getent passwd "$user" | cut -d: -f6)
install -d -m 0700 -o "$user" -g "$user" "$home/.ssh"
printf '%s\n' "$SSH_AUTHORIZED_KEY" >"$home/.ssh/authorized_keys"
chown "$user:$user" "$home/.ssh/authorized_keys"
chmod 0600 "$home/.ssh/authorized_keys"
install -d -m 0755 "$media"
# The session's environment: what a login on a production host has.
mkdir -p /run/sshd
/usr/sbin/sshd -e \
    -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no \
    -o PermitRootLogin=no -o AllowTcpForwarding=yes -o AllowStreamLocalForwarding=yes \
    -o UseDNS=no

# Loopback only: the database is reached through an SSH forward or not at all.
exec /usr/local/bin/docker-entrypoint.sh "$@" -c listen_addresses=localhost
