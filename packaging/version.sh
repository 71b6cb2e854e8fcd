#!/bin/sh
# version.sh VERSION prints the package version for a program version as
# make sets it (git describe --tags --always --dirty, or "dev"): Debian's
# and RPM's versions must start with a digit and order as the builds do.
#
#   v1.2.0               1.2.0
#   v1.2.0-3-g3f2a9c1    1.2.0+3.g3f2a9c1     (after 1.2.0, before 1.2.1)
#   v1.2.0-rc.1          1.2.0~rc.1           (before 1.2.0)
#   3f2a9c1-dirty        0.0.0~git.3f2a9c1.dirty  (no tag yet: before any release)
#   dev                  0.0.0~dev
set -eu
v=${1:?usage: version.sh VERSION}
case $v in
v[0-9]*)
	v=${v#v}
	dirty=
	case $v in *-dirty) v=${v%-dirty} dirty=.dirty ;; esac
	# -N-gHASH after a tag: commits since it.
	since=
	case $v in
	*-[0-9]*-g[0-9a-f]*)
		since=${v##*-g}
		v=${v%-g*}
		since=${v##*-}.g$since
		v=${v%-*}
		;;
	esac
	# A pre-release (v1.2.0-rc.1) sorts before its release.
	case $v in *-*) v=$(printf '%s' "$v" | sed 's/-/~/') ;; esac
	if [ -n "$since" ]; then
		printf '%s+%s%s\n' "$v" "$since" "$dirty"
	else
		printf '%s%s\n' "$v" "${dirty:++0$dirty}"
	fi
	;;
dev | "")
	echo 0.0.0~dev
	;;
*)
	printf '0.0.0~git.%s\n' "$(printf '%s' "$v" | sed 's/-/./g')"
	;;
esac
