#!/usr/bin/env bash
# Compile firebuild's guest init (guest/init.c) into a static binary, guest/build/firebuild-init. Run by
# `npm run build` and `npm install` (prepare). Without a C compiler (or static libc) firebuild uses the
# shell init guest/firebuild-init.sh instead, which does the same job more slowly under emulation.
set -euo pipefail
cd "$(dirname "$0")/.."
out=guest/build/firebuild-init
mkdir -p guest/build
cc=${CC:-cc}
if ! command -v "$cc" >/dev/null 2>&1; then
  echo "build-init: no C compiler: VMs will use the shell init (install build-essential for the compiled one)" >&2
  rm -f "$out"
  exit 0
fi
if [ -x "$out" ] && [ "$out" -nt guest/init.c ]; then exit 0; fi
if ! "$cc" -static -Os -s -Wall -Wextra -Werror -o "$out.tmp" guest/init.c; then
  echo "build-init: compiling guest/init.c failed: VMs will use the shell init" >&2
  rm -f "$out.tmp" "$out"
  exit 0
fi
mv "$out.tmp" "$out"
