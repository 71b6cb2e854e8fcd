#!/usr/bin/env bash
# kube-build.sh builds Kubernetes programs for the integration tests from the
# Go module k8s.io/kubernetes, in a throwaway module outside the project's:
#
#   scripts/kube-build.sh CACHE_DIR PROGRAM...     (PROGRAM: kube-apiserver, kubectl)
#
# The binaries go to CACHE_DIR/kube/bin; one that is already there, of the
# right version, is not built again. k8s.io/kubernetes requires its staging modules at v0.0.0 and
# replaces them with directories of its own repository, which a module
# cannot use; so the throwaway module replaces each of them with the same
# path at the matching published version (v0.32.2 for v1.32.2), taking the
# list from k8s.io/kubernetes's own go.mod, less the two sample modules that
# are not published at that version.
set -euo pipefail

KUBE_VERSION=v1.32.2
STAGING_VERSION=v0.32.2

if [ $# -lt 2 ]; then
	echo "usage: $0 CACHE_DIR PROGRAM..." >&2
	exit 2
fi
cache=$1
shift
bin="$cache/kube/bin"
src="$cache/kube/src"

todo=()
for prog in "$@"; do
	case "$prog" in
	kube-apiserver | kubectl) ;;
	*)
		echo "$0: unknown program $prog (want kube-apiserver or kubectl)" >&2
		exit 2
		;;
	esac
	# A binary of another version (the cache outlives a change of
	# KUBE_VERSION) is built again.
	case "$prog" in
	kube-apiserver) version_args=(--version) ;;
	kubectl) version_args=(version --client) ;;
	esac
	version=""
	if [ -x "$bin/$prog" ]; then
		version=$("$bin/$prog" "${version_args[@]}" 2>/dev/null || true)
	fi
	case "$version" in
	*"$KUBE_VERSION"*) ;;
	*) todo+=("$prog") ;;
	esac
done
if [ ${#todo[@]} -eq 0 ]; then
	exit 0
fi

mkdir -p "$bin" "$src"
cd "$src"
# One build at a time in this directory (make -j runs both targets).
exec 9>.lock
flock 9
start=$(date +%s)
echo "kube-build: building ${todo[*]} from k8s.io/kubernetes $KUBE_VERSION in $src (cold: 10 to 17 minutes on 2 cores, ~0.6 GB of modules)"

# The throwaway module must not see the project's module or workspace.
export GOWORK=off GOFLAGS="-mod=mod -buildvcs=false"

modfile=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
if [ -z "$modfile" ] || [ ! -f "$modfile" ]; then
	echo "$0: cannot download k8s.io/kubernetes@$KUBE_VERSION's go.mod" >&2
	exit 1
fi
staging=$(sed -n '/^replace (/,/^)/s#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/.*#\1#p' "$modfile" |
	grep -v -e '^k8s.io/sample-cli-plugin$' -e '^k8s.io/sample-controller$')
if [ -z "$staging" ]; then
	echo "$0: found no staging modules in $modfile" >&2
	exit 1
fi

{
	echo "module mwi.test/kube-build"
	echo
	echo "go 1.23.0"
	echo
	echo "godebug default=go1.23"
	echo
	echo "require k8s.io/kubernetes $KUBE_VERSION"
	echo
	echo "replace ("
	for m in $staging; do
		echo "	$m => $m $STAGING_VERSION"
	done
	echo ")"
} >go.mod
cat >tools.go <<'GO'
//go:build tools

// Package tools pins the Kubernetes programs that kube-build.sh builds.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
go mod tidy -e >/dev/null 2>tidy.log || { cat tidy.log >&2; exit 1; }

ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags="$ldflags -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=32"
done
for prog in "${todo[@]}"; do
	go build -trimpath -ldflags "$ldflags" -o "$bin/$prog.tmp" "k8s.io/kubernetes/cmd/$prog"
	mv "$bin/$prog.tmp" "$bin/$prog"
	echo "kube-build: $bin/$prog"
done
echo "kube-build: done in $(($(date +%s) - start))s"
