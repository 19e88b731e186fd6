import { afterEach, describe, expect, test } from '@jest/globals';
import * as net from 'node:net';
import { runProbes } from '../../src/runtime/probes.js';

/** The TCP probe against the three behaviours a forwarder in front of a guest can show. */
const servers: net.Server[] = [];
afterEach(() => servers.splice(0).forEach((s) => s.close()));

async function server(onConn: (c: net.Socket) => void): Promise<number> {
  const s = net.createServer(onConn);
  servers.push(s);
  return new Promise((r) => s.listen(0, '127.0.0.1', () => r((s.address() as net.AddressInfo).port)));
}

describe('tcp probe', () => {
  test('a port that accepts and closes at once (the guest refused behind a forwarder) never passes', async () => {
    const port = await server((c) => c.destroy());
    await expect(runProbes({ tcp: [{ host: '127.0.0.1', port }], timeoutMs: 1500 }, '/nonexistent')).rejects.toThrow(/probe tcp 127\.0\.0\.1:\d+ failed within 2 s \(not accepting\): console tail: \(empty\)/);
  });

  test('a port that holds the connection passes, and one that greets (an SSH banner) passes', async () => {
    const held: net.Socket[] = [];
    const quiet = await server((c) => held.push(c));
    const greeting = await server((c) => c.write('SSH-2.0-test\r\n'));
    await expect(runProbes({ tcp: [{ host: '127.0.0.1', port: quiet }, { host: '127.0.0.1', port: greeting }], timeoutMs: 5000 }, '/nonexistent')).resolves.toBeUndefined();
    held.forEach((c) => c.destroy());
  });
});
