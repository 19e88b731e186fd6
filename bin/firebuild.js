#!/bin/sh
":" //# Node 20 reads --env-file anywhere in its argv, so start node with -- before the arguments ; exec node "$(dirname "$(readlink -f "$0")")/firebuild.js" -- "$@"
import { main } from '../lib/cli/main.js';

// Run by sh (the line above), node gets `--` first; run by node directly, it does not.
const args = process.argv.slice(2);
if (args[0] === '--') args.shift();
// Keep the event loop referenced until main settles. A library that leaves a pending promise with no
// referenced handle (fetch waiting on a socket it unreferenced) would otherwise end the process mid-command,
// and signal-exit (pulled in by proper-lockfile) turns Node's "unsettled top-level await" exit code 13
// into 0: a silent, successful-looking exit with nothing printed.
const keepAlive = setInterval(() => undefined, 1 << 30);
try {
  process.exitCode = await main(args);
} finally {
  clearInterval(keepAlive);
}
