#!/usr/bin/env bash
# Start a throw-away PostgreSQL for the test suite and print its URL on stdout.
#   scripts/test-postgres.sh start DIR   -> installs PostgreSQL if missing (root only),
#                                            initdb + start in DIR, prints the URL
#   scripts/test-postgres.sh stop DIR    -> stops it and removes DIR
# Everything it makes lives in DIR; nothing touches a system PostgreSQL.
set -euo pipefail

cmd=${1:?start|stop}
dir=${2:?directory}

find_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
  done
  return 1
}

case "$cmd" in
start)
  if ! bin=$(find_bin); then
    if [ "$(id -u)" != 0 ]; then
      echo "PostgreSQL is not installed and this is not root: cannot install it" >&2
      exit 3
    fi
    echo "installing PostgreSQL from Debian's packages..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q postgresql >&2 || { apt-get update -q >&2 && apt-get install -y -q postgresql >&2; }
    bin=$(find_bin)
  fi
  mkdir -p "$dir"
  run=()
  if [ "$(id -u)" = 0 ]; then
    # initdb refuses to run as root: hand the directory to the postgres user.
    id postgres >/dev/null 2>&1 || useradd --system --home "$dir" postgres
    chown -R postgres "$dir"
    run=(runuser -u postgres --)
  fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "${run[@]}" "$bin/initdb" -D "$dir/data" -U tether --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1
  "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >&2
  echo "postgresql+psycopg://tether@127.0.0.1:$port/postgres"
  ;;
stop)
  if bin=$(find_bin) && [ -d "$dir/data" ]; then
    run=()
    [ "$(id -u)" = 0 ] && run=(runuser -u postgres --)
    "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop >&2 || true
  fi
  rm -rf "$dir"
  ;;
*)
  echo "usage: $0 start|stop DIR" >&2
  exit 2
  ;;
esac
