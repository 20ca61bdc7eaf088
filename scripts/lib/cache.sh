# shellcheck shell=bash
# Sourced by build-kube.sh and fetch-crds.sh: both fill a cache outside the repository
# from the Go module proxy, once, however many processes ask at the same time.

# cache_ready_or_lock TAG LOCKFILE COMPLETE
#   Exit 0 when the command COMPLETE says the cache is complete. Otherwise require Go,
#   take LOCKFILE (one filler at a time: a second one waits, then finds the cache
#   complete and exits 0) and return, holding the lock on fd 9 until the script ends,
#   to fill the cache.
cache_ready_or_lock() {
	local tag=$1 lock=$2 complete=$3
	if "${complete}"; then
		echo "${tag}: cached"
		exit 0
	fi
	command -v go >/dev/null || {
		echo "${tag}: the Go toolchain (go) is required" >&2
		exit 1
	}
	# Never download another toolchain: fail loudly if a go.mod needs a newer Go.
	export GOTOOLCHAIN=local
	mkdir -p "$(dirname "${lock}")"
	exec 9>"${lock}"
	flock 9
	if "${complete}"; then
		echo "${tag}: cached (filled by another process)"
		exit 0
	fi
}
