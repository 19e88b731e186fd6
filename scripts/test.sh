#!/usr/bin/env bash
# The README's second command: set up this host and run the whole test suite (typecheck, lint, unit and
# integration tests on real parts). Run from the repository as root (or with sudo available).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
npm ci --no-audit --no-fund --loglevel=error
npm run --silent typecheck
npm run --silent lint

report=$(mktemp /tmp/firebuild-jest-XXXXXX.json)
trap 'rm -f "$report"' EXIT
set +e
node --experimental-vm-modules node_modules/jest/bin/jest.js --json --outputFile="$report" "$@"
rc=$?
set -e
# One plain closing line that any CI can read.
node -e 'const r=require(process.argv[1]); console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests} skipped`)' "$report" || true
exit $rc
