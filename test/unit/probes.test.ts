import { afterEach, describe, expect, test } from '@jest/globals';
import * as http from 'node:http';
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
    await expect(runProbes({ tcp: [{ host: '127.0.0.1', port: quiet }, { host: '127.0.0.1', port: greeting }], timeoutMs: 5000 }, '/nonexistent')).resolves.toEqual([
      expect.objectContaining({ what: `tcp 127.0.0.1:${quiet}`, passed: true, attempts: 1 }),
      expect.objectContaining({ what: `tcp 127.0.0.1:${greeting}`, passed: true, attempts: 1 }),
    ]);
    held.forEach((c) => c.destroy());
  });
});

describe('probes against one deadline', () => {
  test('a probe after one that took the whole deadline still gets its try: it passes on its first', async () => {
    // The first probe's service answers only after the deadline (a check that began in time counts); the
    // second's answers at once. The second used to fail as "not tried".
    const slow = http.createServer((_req, res) => setTimeout(() => res.end('late but fine'), 1500));
    const quick = http.createServer((_req, res) => res.end('at once'));
    const urls: string[] = [];
    for (const s of [slow, quick]) {
      await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
      urls.push(`http://127.0.0.1:${(s.address() as net.AddressInfo).port}/`);
    }
    try {
      await expect(runProbes({ http: urls.map((url) => ({ url, status: 200 })), timeoutMs: 1000 }, '/nonexistent')).resolves.toHaveLength(2);
    } finally {
      for (const s of [slow, quick]) {
        s.closeAllConnections();
        s.close();
      }
    }
  });
});

describe('probe results', () => {
  test('a probe that passes after failing reports its tries, its time and why the first try failed; a failed one is reported before the error', async () => {
    let calls = 0;
    const s = http.createServer((_req, res) => {
      calls++;
      res.statusCode = calls < 3 ? 503 : 200;
      res.end('x');
    });
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
    const url = `http://127.0.0.1:${(s.address() as net.AddressInfo).port}/`;
    const seen: unknown[] = [];
    try {
      const [r] = await runProbes({ http: [{ url, status: 200 }], timeoutMs: 5000 }, '/nonexistent', (x) => seen.push(x));
      expect(r).toEqual({ what: `GET ${url}`, passed: true, attempts: 3, ms: expect.any(Number), firstFailure: 'status 503, expected 200' });
      expect(seen).toEqual([r]);
      seen.length = 0;
      await expect(runProbes({ http: [{ url: `${url}x`, status: 404 }], timeoutMs: 300 }, '/nonexistent', (x) => seen.push(x))).rejects.toThrow(/status 200, expected 404/);
      expect(seen).toEqual([expect.objectContaining({ passed: false, lastFailure: 'status 200, expected 404' })]);
      expect((seen[0] as { attempts: number }).attempts).toBeGreaterThan(1);
    } finally {
      s.close();
    }
  });
});
