import { describe, expect, test } from '@jest/globals';
import * as os from 'node:os';
import { HostOnlyGuard, hostUrlsAllowed, isHostOnly } from '../../src/net/host-only.js';
import { UserError } from '../../src/util/errors.js';

describe('host-only addresses (the destinations a Dockerfile URL may not reach)', () => {
  test('loopback, link-local, unspecified, IPv4-mapped forms and the host interface addresses are host-only; public addresses are not', async () => {
    for (const a of ['127.0.0.1', '127.9.8.7', '::1', '::ffff:127.0.0.1', '169.254.169.254', 'fe80::1', 'fe80::1%eth0', '0.0.0.0', '::', '::ffff:169.254.169.254']) {
      expect([a, await isHostOnly(a)]).toEqual([a, true]);
    }
    for (const a of ['8.8.8.8', '2001:4860:4860::8888', '93.184.216.34']) expect([a, await isHostOnly(a)]).toEqual([a, false]);
    const own = Object.values(os.networkInterfaces()).flat().filter((i) => i && !i.internal).map((i) => i!.address);
    expect(own.length).toBeGreaterThan(0);
    for (const a of own) expect([a, await isHostOnly(a)]).toEqual([a, true]);
  });

  test('the guard refuses a literal and a name that resolves to loopback with one line; a trusted origin is not checked', async () => {
    const g = new HostOnlyGuard('http://127.0.0.1:9');
    const lit = await g.check(new URL('http://[::1]:80/x')).catch((e: unknown) => e);
    expect(lit).toBeInstanceOf(UserError);
    expect((lit as Error).message).toBe('::1 is a host-only address a build may not fetch from: serve it from elsewhere, or allow it with --allow-host-urls (trusted Dockerfiles only)');
    const name = await g.check(new URL('http://localhost:80/x')).catch((e: unknown) => e);
    expect((name as Error).message).toMatch(/^localhost resolves to (127\.0\.0\.1|::1), a host-only address/);
    expect(await g.check(new URL('http://127.0.0.1:9/ctx/file'))).toBeUndefined();
    await expect(g.check(new URL('http://127.0.0.1:10/ctx/file'))).rejects.toThrow(/127\.0\.0\.1 is a host-only address/);
  });

  test('--allow-host-urls or FIREBUILD_ALLOW_HOST_URLS=1 (nothing else) allows', () => {
    expect(hostUrlsAllowed(true, {})).toBe(true);
    expect(hostUrlsAllowed(false, { FIREBUILD_ALLOW_HOST_URLS: '1' })).toBe(true);
    expect(hostUrlsAllowed(undefined, { FIREBUILD_ALLOW_HOST_URLS: 'yes' })).toBe(false);
    expect(hostUrlsAllowed(undefined, {})).toBe(false);
  });
});
