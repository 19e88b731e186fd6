// The built CLI (lib/) started with the process's cancel handlers installed (util/cleanup.ts exitOnSignals),
// as an entry point installs them: for cancel tests while bin/firebuild.js does not install them yet.
// usage: node cancel-harness.mjs ARGS...
import { main } from '../../lib/cli/main.js';
import { exitOnSignals } from '../../lib/util/cleanup.js';

exitOnSignals();
const keepAlive = setInterval(() => undefined, 1 << 30);
try {
  process.exitCode = await main(process.argv.slice(2));
} finally {
  clearInterval(keepAlive);
}
