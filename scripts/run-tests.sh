#!/usr/bin/env bash
# Every check and test of Tether, in order: lint, format, types, import contracts, tests.
# Called by `make test`. Starts a throw-away PostgreSQL unless TETHER_TEST_POSTGRES_URL is
# set; installs system packages the integration tests need when it runs as root.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export PATH="$PWD/$BIN:$PATH"

step() { printf '\n==> %s\n' "$*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }

read -r -a code_dirs <<< "$(ls -d src tests bench scripts 2>/dev/null | tr '\n' ' ')"
step "ruff (lint)";    ruff check "${code_dirs[@]}" || fail "ruff check"
step "ruff (format)";  ruff format --check "${code_dirs[@]}" || fail "ruff format (run: .venv/bin/ruff format)"
step "mypy (src)";     mypy || fail "mypy"
step "import contracts"; lint-imports || fail "import-linter contracts"
[ "${1:-}" = "--lint-only" ] && exit 0

if [ "$(id -u)" = 0 ]; then
  step "system packages for integration tests"
  scripts/install-test-deps.sh || fail "installing test dependencies"
fi

step "Kubernetes, etcd, containerd 2, crictl and the Cilium/Calico CRDs for the Kubernetes and real-node tests"
if command -v go >/dev/null 2>&1; then
  echo "(the first build compiles from the Go module proxy and takes several minutes; cached after)"
  scripts/build-kube.sh || fail "building the test binaries (scripts/build-kube.sh)"
  scripts/fetch-crds.sh || fail "fetching the Cilium and Calico CRDs (scripts/fetch-crds.sh)"
elif [ "${CI:-}" = "true" ]; then
  fail "Go is missing: the Kubernetes integration tests cannot be built, and CI=true forbids skipping"
else
  echo "Go is missing: the Kubernetes integration tests will be skipped."
fi

pg_dir=""
cleanup() { [ -n "$pg_dir" ] && scripts/test-postgres.sh stop "$pg_dir"; }
trap cleanup EXIT
if [ -z "${TETHER_TEST_POSTGRES_URL:-}" ]; then
  if [ "$(id -u)" = 0 ]; then
    step "throw-away PostgreSQL"
    pg_dir=$(mktemp -d /tmp/tether-pg.XXXXXX)
    url=$(scripts/test-postgres.sh start "$pg_dir") || fail "starting PostgreSQL"
    export TETHER_TEST_POSTGRES_URL="$url"
    echo "PostgreSQL at $url"
  else
    echo "PostgreSQL tests will be skipped: not root, so PostgreSQL cannot be installed or" \
      "started here; set TETHER_TEST_POSTGRES_URL to run them."
  fi
fi

if [ "${CI:-}" = "true" ] || [ "${TETHER_CHECK_FLOORS:-}" = "1" ]; then
  step "dependency floors: the tests against the lowest versions pyproject.toml allows"
  # The rollout simulation is pure domain code: a few hundred worlds are enough here.
  TETHER_SIM_RUNS=200 python scripts/check_floors.py || fail "the declared dependency floors (scripts/check_floors.py)"
fi

step "pytest"
python -m pytest "$@"
rc=$?
[ -n "${TETHER_PYTEST_RC_FILE:-}" ] && echo "$rc" > "$TETHER_PYTEST_RC_FILE"
exit $rc
