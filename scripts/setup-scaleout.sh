#!/usr/bin/env bash
# Set-up for the scale-out tests (docs/scale-out.md), called by scripts/setup.sh after the
# main engines, venv and test image exist. Idempotent; everything listens on loopback only.
#   1. sshd on 127.0.0.1 and 127.0.0.2 (port $AGENTKERNEL_SSH_PORT), root key auth: the
#      "hosts" of Enterprise Gateway's DistributedProcessProxy and the ssh:// engine URL.
#   2. A second dockerd on tcp://127.0.0.1:2376 with TLS (certificates made here with openssl),
#      its own data root, exec root, pidfile and bridge, no iptables rules: the "remote" engine.
#      The test image is copied into it from the main Docker (save | load through the APIs).
#   3. Enterprise Gateway in its own venv ($ROOT/.venv-gateway): it pins old jupyter_server,
#      jupyter_client and ipykernel, which must not meet the main venv.
# Usage: scripts/setup-scaleout.sh VENV IMAGE
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=$1
IMAGE=$2
SSH_PORT=${AGENTKERNEL_SSH_PORT:-2222}
TLS_PORT=${AGENTKERNEL_TLS_PORT:-2376}
TLS_DIR=${AGENTKERNEL_TLS_DIR:-/etc/agentkernel/docker-tls}
TLS_ROOT=/var/lib/agentkernel-docker-tls
TLS_EXEC=/run/agentkernel-docker-tls
TLS_BRIDGE=aktls0
TLS_BRIDGE_CIDR=10.213.77.1/24
GATEWAY_VENV=${AGENTKERNEL_GATEWAY_VENV:-$ROOT/.venv-gateway}
log() { printf '[setup-scaleout] %s\n' "$*" >&2; }
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
started=$SECONDS

need_apt=()
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
command -v openssl >/dev/null || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_apt[@]}" \
    >/dev/null
fi

# --- sshd on loopback, root key auth ---------------------------------------------------------
SSHD_CONF=/etc/ssh/agentkernel_sshd_config
mkdir -p /root/.ssh /run/sshd && chmod 700 /root/.ssh
[ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -A
[ -f /root/.ssh/id_ed25519 ] || ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519
touch /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys
grep -qF "$(cut -d' ' -f2 /root/.ssh/id_ed25519.pub)" /root/.ssh/authorized_keys \
  || cat /root/.ssh/id_ed25519.pub >>/root/.ssh/authorized_keys
cat >"$SSHD_CONF.new" <<CONF
# agentkernel scale-out tests: loopback only, keys only
Port $SSH_PORT
ListenAddress 127.0.0.1
ListenAddress 127.0.0.2
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PidFile /run/agentkernel-sshd.pid
MaxStartups 100:30:200
MaxSessions 100
AcceptEnv LANG
Subsystem sftp internal-sftp
CONF
mv "$SSHD_CONF.new" "$SSHD_CONF"
if ! (exec 3<>/dev/tcp/127.0.0.2/"$SSH_PORT") 2>/dev/null; then
  log "starting sshd on 127.0.0.1 and 127.0.0.2 port $SSH_PORT"
  /usr/sbin/sshd -f "$SSHD_CONF"
  for _ in $(seq 1 20); do (exec 3<>/dev/tcp/127.0.0.2/"$SSH_PORT") 2>/dev/null && break; sleep 0.2; done
fi
touch /root/.ssh/known_hosts
for host in 127.0.0.1 127.0.0.2; do  # this sshd's key, fresh (an older one may linger)
  ssh-keygen -R "[$host]:$SSH_PORT" >/dev/null 2>&1 || true
  ssh-keyscan -p "$SSH_PORT" -t ed25519 "$host" 2>/dev/null >>/root/.ssh/known_hosts
done
ssh -o BatchMode=yes -p "$SSH_PORT" root@127.0.0.2 true \
  || { log "ssh root@127.0.0.2:$SSH_PORT with the key failed"; exit 1; }

# --- certificates for the TLS engine ------------------------------------------------------
if [ ! -f "$TLS_DIR/client/key.pem" ]; then
  log "making a CA, server and client certificates in $TLS_DIR"
  work=$(mktemp -d)
  (
    cd "$work"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=agentkernel test CA" \
      -keyout ca-key.pem -out ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server-key.pem \
      -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 3650 \
      -extfile server.ext -out server-cert.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=agentkernel-client" -keyout key.pem \
      -out client.csr 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 3650 \
      -extfile client.ext -out cert.pem 2>/dev/null
    mkdir -p "$TLS_DIR/server" "$TLS_DIR/client"
    cp ca.pem server-cert.pem server-key.pem "$TLS_DIR/server/"
    cp ca.pem cert.pem key.pem "$TLS_DIR/client/"
  )
  rm -rf "$work"
  chmod 600 "$TLS_DIR"/server/server-key.pem "$TLS_DIR"/client/key.pem
fi

# --- the second dockerd, on TLS ---------------------------------------------------------------
tls_docker() {
  DOCKER_HOST=tcp://127.0.0.1:$TLS_PORT DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=$TLS_DIR/client \
    docker "$@"
}
if ! tls_docker info >/dev/null 2>&1; then
  log "starting a second dockerd on tcp://127.0.0.1:$TLS_PORT (TLS)"
  if ! ip link show "$TLS_BRIDGE" >/dev/null 2>&1; then
    ip link add "$TLS_BRIDGE" type bridge
    ip addr add "$TLS_BRIDGE_CIDR" dev "$TLS_BRIDGE"
  fi
  ip link set "$TLS_BRIDGE" up
  mkdir -p "$TLS_ROOT" "$TLS_EXEC"
  echo '{}' >"$TLS_EXEC/daemon.json"  # not /etc/docker/daemon.json: that one is the main engine's
  rm -f "$TLS_EXEC/docker.pid"
  start_daemon /var/log/agentkernel-dockerd-tls.log dockerd --config-file "$TLS_EXEC/daemon.json" \
    --host "tcp://127.0.0.1:$TLS_PORT" --tlsverify --tlscacert "$TLS_DIR/server/ca.pem" \
    --tlscert "$TLS_DIR/server/server-cert.pem" --tlskey "$TLS_DIR/server/server-key.pem" \
    --data-root "$TLS_ROOT" --exec-root "$TLS_EXEC" --pidfile "$TLS_EXEC/docker.pid" \
    --bridge "$TLS_BRIDGE" --iptables=false --ip6tables=false --ip-masq=false \
    --cgroup-parent agentkernel-tls
  for _ in $(seq 1 60); do tls_docker info >/dev/null 2>&1 && break; sleep 0.5; done
  tls_docker info >/dev/null 2>&1 || { log "TLS dockerd did not come up"; \
    tail -20 /var/log/agentkernel-dockerd-tls.log >&2; exit 1; }
fi
if ! tls_docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "copying $IMAGE from the main Docker into the TLS engine"
  docker save "$IMAGE" | tls_docker load -q >&2
fi

# sandboxes with the network join this engine's guarded network too (agentkernel/netguard.py)
DOCKER_HOST=tcp://127.0.0.1:$TLS_PORT DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=$TLS_DIR/client \
  "$VENV/bin/agentkernel" --engine docker network setup >&2

# --- Enterprise Gateway, in its own venv ------------------------------------------------------
if [ ! -x "$GATEWAY_VENV/bin/jupyter-enterprisegateway" ]; then
  log "installing Enterprise Gateway into $GATEWAY_VENV"
  python3 -m venv "$GATEWAY_VENV"
  "$GATEWAY_VENV/bin/pip" install -q "jupyter_enterprise_gateway>=3.2,<4"
fi
# its wheels, for the test that follows docs/scale-out.md into fresh venvs without an index
if [ ! -f "$GATEWAY_VENV/wheels/.complete" ]; then
  log "collecting Enterprise Gateway's wheels in $GATEWAY_VENV/wheels"
  "$GATEWAY_VENV/bin/pip" wheel -q --wheel-dir "$GATEWAY_VENV/wheels" \
    "jupyter_enterprise_gateway>=3.2,<4" >/dev/null
  touch "$GATEWAY_VENV/wheels/.complete"
fi
log "ready in $((SECONDS - started)) s"
