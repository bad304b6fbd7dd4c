#!/usr/bin/env bash
# Generate the secrets a deployment needs, with fresh random values:
#   hmac-secret               decision signing key (SAVE_HMAC_SECRET_FILE)
#   tokens.json               API tokens (AUTH_TOKENS_FILE), RBAC shape:
#                             an operator token and a scrape-only token
#   scrape-token              the scrape-only token, for Prometheus
#   grafana-admin-password    Grafana's admin password (compose)
#   scripts/deploy-secrets.sh [DIR]      # default deploy/secrets (git-ignored)
# Existing files are kept (rerunning is safe); delete one to rotate it.
# Kubernetes: kubectl create secret generic tollgate-secrets --from-file=DIR
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-deploy/secrets}"
mkdir -p "$dir"
chmod 700 "$dir"
token() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }
# Readable by the containers' users (the directory itself is private).
write() { [ -e "$dir/$1" ] || { umask 022; printf '%s' "$2" > "$dir/$1"; echo "deploy-secrets: wrote $dir/$1"; }; }
write hmac-secret "$(token)"
write grafana-admin-password "$(token)"
if [ ! -e "$dir/tokens.json" ]; then
  operator="$(token)"
  scrape="$(token)"
  write tokens.json "$(printf '{\n  "%s": {"operator": true, "scopes": ["admin"], "subject": "operator"},\n  "%s": {"operator": true, "scopes": ["metrics.scrape"], "subject": "prometheus"}\n}\n' "$operator" "$scrape")"
  rm -f "$dir/scrape-token"
  write scrape-token "$scrape"
fi
[ -e "$dir/scrape-token" ] || { echo "deploy-secrets: $dir/tokens.json exists but $dir/scrape-token does not; add the scrape token's value there" >&2; exit 1; }
