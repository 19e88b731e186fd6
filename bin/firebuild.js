#!/bin/sh
":" //# Node 20 reads --env-file anywhere in its argv, so start node with -- before the arguments ; exec node "$(dirname "$(readlink -f "$0")")/firebuild.js" -- "$@"
import { main } from '../lib/cli/main.js';

// Run by sh (the line above), node gets `--` first; run by node directly, it does not.
const args = process.argv.slice(2);
if (args[0] === '--') args.shift();
process.exitCode = await main(args);
