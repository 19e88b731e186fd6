#!/usr/bin/env bash
# Bundles every GitHub Action entry point (or those named as arguments) src/actions/<name>/main.ts (and post.ts) with @vercel/ncc into
# dist/<name>/index.js (and dist/<name>/post/index.js). dist/ is checked in; CI verifies it is current.
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob
count=0
# The bundles are ES modules (the package is "type": "module"); some dependencies (ssh2, under dockerode)
# still read CommonJS's __dirname/__filename, which ncc does not define in ES output: define them first.
# No --license: ncc picks the license text of one of several copies of a package (isarray, ...) in no
# fixed order, which made dist/ differ from build to build; licenses stay in node_modules/*/LICENSE.
shim() {
  local f=$1
  { printf '%s\n' "import { fileURLToPath as __fbFileURLToPath } from 'node:url'; import { dirname as __fbDirname } from 'node:path'; const __filename = __fbFileURLToPath(import.meta.url); const __dirname = __fbDirname(__filename);"; cat "$f"; } > "$f.tmp"
  mv "$f.tmp" "$f"
}
# Arguments name actions to rebundle (default: all).
if [ $# -gt 0 ]; then mains=(); for a in "$@"; do mains+=("src/actions/$a/main.ts"); done; else mains=(src/actions/*/main.ts); fi
for main in "${mains[@]}"; do
  [ -f "$main" ] || { echo "no action $main" >&2; exit 1; }
  name=$(basename "$(dirname "$main")")
  rm -rf "dist/$name"
  npx ncc build "$main" -o "dist/$name" --minify --quiet
  shim "dist/$name/index.js"
  if [ -f "src/actions/$name/post.ts" ]; then
    npx ncc build "src/actions/$name/post.ts" -o "dist/$name/post" --minify --quiet
    shim "dist/$name/post/index.js"
  fi
  count=$((count + 1))
done
echo "bundled $count action(s)"
