#!/usr/bin/env bash
# Prerequisites of the test suite on a fresh machine: a running PostgreSQL at
# 127.0.0.1:5432 (user postgres, trust auth, database test), a running MariaDB
# at 127.0.0.1:3306 (user root, empty password, database test) and Python's
# grpcio-tools (the "other gRPC implementation" the contract test uses) and
# grpcio-reflection (the generic reflection client).
set -euo pipefail

if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  echo "tests/setup.sh: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
  for _ in $(seq 1 30); do
    pg_isready -h 127.0.0.1 -p 5432 -q && break
    sleep 1
  done
  pg_isready -h 127.0.0.1 -p 5432 -q || { echo "PostgreSQL did not come up" >&2; exit 1; }
fi

# MariaDB for the reference departments' MySQL/MariaDB tests
# (crates/devkit/src/reference/tests.rs): installed if missing, started if
# down, and root allowed in over TCP with an empty password (Debian's root
# signs in through the Unix socket only).
mariadb_ready() {
  mariadb -h 127.0.0.1 -P 3306 -u root --connect-timeout=2 -e 'SELECT 1' test >/dev/null 2>&1
}
if ! mariadb_ready; then
  if ! command -v mariadbd >/dev/null && ! [ -x /usr/sbin/mariadbd ]; then
    echo "tests/setup.sh: installing mariadb-server"
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y mariadb-server
  fi
  if ! mariadb-admin ping --silent >/dev/null 2>&1; then
    echo "tests/setup.sh: starting MariaDB"
    service mariadb start || /etc/init.d/mariadb start
    for _ in $(seq 1 30); do
      mariadb-admin ping --silent >/dev/null 2>&1 && break
      sleep 1
    done
  fi
  echo "tests/setup.sh: letting root in over TCP with an empty password; creating database test"
  mariadb -u root <<'SQL'
CREATE DATABASE IF NOT EXISTS test;
ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket;
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
  mariadb_ready || { echo "MariaDB did not come up at 127.0.0.1:3306" >&2; exit 1; }
fi

if ! python3 -c 'import grpc, grpc_tools' 2>/dev/null; then
  echo "tests/setup.sh: installing grpcio and grpcio-tools"
  python3 -m pip install --quiet grpcio grpcio-tools
fi

# The HTTP/JSON OpenAPI document is validated by openapi-spec-validator
# (crates/proto/tests/openapi.rs).
if ! python3 -c 'import openapi_spec_validator' 2>/dev/null; then
  echo "tests/setup.sh: installing openapi-spec-validator"
  python3 -m pip install --quiet openapi-spec-validator
fi

# grpcio-reflection: the generic-tool test (tests/e2e/reflection.rs) lists
# the exchange's services and builds a Lookup from reflected descriptors.
if ! python3 -c 'import grpc_reflection' 2>/dev/null; then
  echo "tests/setup.sh: installing grpcio-reflection"
  python3 -m pip install --quiet grpcio-reflection
fi

# The console's browser tests (crates/console/tests/console/browser.rs) drive headless
# Chromium through chromedriver; a CJK font makes the screenshots legible.
command -v chromedriver >/dev/null && fc-list :lang=zh | grep -q . || {
  echo "tests/setup.sh: installing chromium, chromium-driver and a CJK font"
  apt-get update && apt-get install -y chromium chromium-driver fonts-wqy-zenhei
}
