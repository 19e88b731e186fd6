#!/usr/bin/env bash
# Bundles every GitHub Action entry point src/actions/<name>/main.ts (and post.ts) with @vercel/ncc into
# dist/<name>/index.js (and dist/<name>/post/index.js). dist/ is checked in; CI verifies it is current.
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob
count=0
for main in src/actions/*/main.ts; do
  name=$(basename "$(dirname "$main")")
  npx ncc build "$main" -o "dist/$name" --minify --license licenses.txt --quiet
  if [ -f "src/actions/$name/post.ts" ]; then
    npx ncc build "src/actions/$name/post.ts" -o "dist/$name/post" --minify --quiet
  fi
  count=$((count + 1))
done
echo "bundled $count action(s)"
