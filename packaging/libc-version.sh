#!/bin/sh
# libc-version.sh BINARY... prints the newest GNU C library symbol version
# the binaries need (such as 2.34), for the packages' libc6 dependency; it
# fails if none needs the C library.
set -eu
v=$(for b in "$@"; do objdump -T "$b"; done | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
if [ -z "$v" ]; then
	echo "libc-version.sh: $*: no GLIBC symbol versions (not linked with the C library?)" >&2
	exit 1
fi
echo "$v"
