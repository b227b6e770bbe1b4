#!/usr/bin/env bash
# Debian packages the local mode and the tests need. Idempotent; installs only what is missing.
set -euo pipefail
need=()
command -v java >/dev/null 2>&1 && java -version 2>&1 | grep -q '"17' || need+=(openjdk-17-jre-headless)
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)     # lints scripts/build_and_push.sh in tests/docker
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)   # the local OCI registry of the buildspec test
# the SageMaker Python SDK's local mode runs jobs and endpoints with compose (tests/sdk)
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || need+=(docker-compose)
# PostgreSQL server binaries (initdb, pg_ctl under /usr/lib/postgresql/*/bin): the shared-study tuning test
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "[setup] installing Debian packages: ${need[*]}"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
