import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import { UserError } from '../util/errors.js';
import { boundedFetch } from '../util/download.js';
import { consoleTail, exitCodeOf, followConsole } from './console.js';
import type { VmmIdentity } from './vmm-process.js';

const PROBE_MAX_BYTES = 1024 ** 2;

/** Smoke probes: a TCP port that accepts, an HTTP GET with status and body, each before a deadline. */
export interface Probes {
  tcp?: { host: string; port: number }[];
  http?: { url: string; status: number; body?: string }[];
  timeoutMs: number;
}

/** One probe's outcome: how many tries it took and how long, from its first try to its last. */
export interface ProbeResult {
  what: string;
  passed: boolean;
  attempts: number;
  ms: number;
  /** Why the first try failed (absent when it passed at once). */
  firstFailure?: string;
  /** Why the last try failed (absent when the probe passed). */
  lastFailure?: string;
}

/**
 * A TCP port that accepts and keeps the connection. A forwarder in front of the guest (QEMU's user-mode
 * networking) accepts at once and only then tries the guest, closing the connection when the guest
 * refuses: so a connection counts when the peer sends something (an SSH banner) or still holds it open
 * after a short grace period.
 */
function tryTcp(host: string, port: number, graceMs = 300): Promise<boolean> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (ok: boolean): void => {
      if (settled) return;
      settled = true;
      s.destroy();
      resolve(ok);
    };
    const s = net.connect({ host, port, timeout: 2000 });
    s.once('connect', () => {
      s.setTimeout(0);
      setTimeout(() => done(true), graceMs);
    });
    s.once('data', () => done(true));
    s.once('end', () => done(false));
    s.once('close', () => done(false));
    s.once('error', () => done(false));
    s.once('timeout', () => done(false));
  });
}

async function tryHttp(url: string, status: number, body?: string): Promise<string | undefined> {
  try {
    // The guest's answer: at most 1 MiB is read (a probe looks for a marker, not a download).
    const res = await boundedFetch(url, {
      limits: { maxBytes: PROBE_MAX_BYTES, deadlineMs: 5000, stallMs: 5000 },
      what: `GET ${url}`,
      tooLarge: (limit) => `the answer is larger than ${limit}`,
      // The VM runs on this host: a proxy in the environment (HTTP_PROXY) is for the outside.
      direct: true,
    });
    const text = res.body!.toString('utf8');
    if (res.status !== status) return `status ${res.status}, expected ${status}`;
    if (body !== undefined && !text.includes(body)) return `body lacks ${JSON.stringify(body)}`;
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/**
 * Run every probe until it passes; a probe still failing at the deadline is an error with the console tail.
 * The deadline counts from this call, which the callers make once the VM is up (its init started): the
 * boot has a deadline of its own. The probes run one after another against one deadline, and each is
 * tried at least once: one that passes on its first try is never failed as "not tried" because the probes
 * before it took the time.
 */
export async function runProbes(p: Probes, serialLog: string, report?: (r: ProbeResult) => void): Promise<ProbeResult[]> {
  const deadline = Date.now() + p.timeoutMs;
  const pending: { what: string; check: () => Promise<string | undefined> }[] = [
    ...(p.tcp ?? []).map((t) => ({ what: `tcp ${t.host}:${t.port}`, check: async () => ((await tryTcp(t.host, t.port)) ? undefined : 'not accepting') })),
    ...(p.http ?? []).map((h) => ({ what: `GET ${h.url}`, check: () => tryHttp(h.url, h.status, h.body) })),
  ];
  const results: ProbeResult[] = [];
  for (const probe of pending) {
    const started = Date.now();
    let attempts = 1;
    let last = await probe.check();
    const first = last;
    // Retries start at 20 ms and back off to 500 ms: a service that comes up right after the init (the
    // common case) is seen within a few tens of milliseconds, a slow one costs the guest little.
    let pause = 20;
    while (last !== undefined && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, Math.min(pause, Math.max(0, deadline - Date.now()))));
      pause = Math.min(500, pause * 1.5);
      attempts++;
      last = await probe.check();
    }
    const r: ProbeResult = { what: probe.what, passed: last === undefined, attempts, ms: Date.now() - started, ...(first !== undefined ? { firstFailure: first } : {}), ...(last !== undefined ? { lastFailure: last } : {}) };
    results.push(r);
    report?.(r);
    if (last !== undefined) {
      const console = await fsp.readFile(serialLog, 'utf8').catch(() => '');
      throw new UserError(`probe ${probe.what} failed within ${Math.round(p.timeoutMs / 1000)} s (${last}): console tail: ${consoleTail(console)}`);
    }
  }
  return results;
}

/**
 * The exit-code probe: wait for the VM's command to end (the init's `FIREBUILD-EXIT code=N` line and the
 * VMM gone) and require code `want`; a deadline or another code is an error with the console tail.
 */
export async function waitExitCode(serialLog: string, vmm: VmmIdentity, want: number, timeoutMs: number): Promise<number> {
  let text = '';
  for await (const chunk of followConsole(serialLog, vmm, { signal: AbortSignal.timeout(timeoutMs) })) text += chunk;
  const code = exitCodeOf(text);
  if (code === undefined) throw new UserError(`the command did not exit within ${Math.round(timeoutMs / 1000)} s: console tail: ${consoleTail(text)}`);
  if (code !== want) throw new UserError(`the command exited with code ${code}, expected ${want}: console tail: ${consoleTail(text)}`);
  return want;
}
