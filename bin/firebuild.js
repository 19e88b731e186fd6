#!/bin/sh
":" //# Node 20 reads --env-file anywhere in its argv, so start node with -- before the arguments ; exec node --no-preserve-symlinks-main "$0" -- "$@"
// (The line above: node resolves npm's bin symlink to this file by itself, so sh starts no readlink and
// dirname processes for it: each is a fork and exec, about a tenth of node's own start-up.)
import { main } from '../lib/cli/main.js';
import { cancelled, exitOnSignals } from '../lib/util/cleanup.js';

// Run by sh (the line above), node gets `--` first; run by node directly, it does not.
const args = process.argv.slice(2);
if (args[0] === '--') args.shift();
else if (args.some((a) => /^--env-file(-if-exists)?(=|$)/.test(a))) {
  // `node bin/firebuild.js ... --env-file F`: Node has already read F as its own env file (and run any
  // NODE_OPTIONS in it) before this line; refuse to go on rather than act as if nothing happened.
  process.stderr.write("error: started as 'node bin/firebuild.js' with --env-file, which Node itself reads (and runs its NODE_OPTIONS) before firebuild starts: run ./bin/firebuild.js, npx firebuild or the installed firebuild instead\n");
  process.exit(2);
}
// Keep the event loop referenced until main settles. A library that leaves a pending promise with no
// referenced handle (fetch waiting on a socket it unreferenced) would otherwise end the process mid-command,
// and signal-exit (pulled in by proper-lockfile) turns Node's "unsettled top-level await" exit code 13
// into 0: a silent, successful-looking exit with nothing printed.
const keepAlive = setInterval(() => undefined, 1 << 30);
// SIGINT/SIGTERM/SIGHUP: remove every VM and work dir this process owns (lib/util/cleanup.js), exit 130/143/129.
exitOnSignals();
try {
  process.exitCode = await main(args);
} finally {
  // Cancelled: the loop stays referenced until the signal handler has removed what the command owned and exits.
  if (!cancelled()) clearInterval(keepAlive);
}
