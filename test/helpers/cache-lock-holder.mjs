// A separate process that takes a cache volume's lock through the built lib/ and holds it until killed.
// usage: node cache-lock-holder.mjs LOCKFILE shared|exclusive   (prints HELD once it holds the lock)
import { lockFile } from '../../lib/engine/vm/cache-volumes.js';

const [file, kind] = process.argv.slice(2);
const unlock = await lockFile(file, { shared: kind === 'shared', wait: true, timeoutMs: 30_000, what: 'cache test' });
if (!unlock) process.exit(3);
process.stdout.write('HELD\n');
setInterval(() => undefined, 1 << 30);
