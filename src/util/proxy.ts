import { BlockList, isIP } from 'node:net';
import { domainToASCII } from 'node:url';
import type { Dispatcher } from 'undici';
import { UserError } from './errors.js';

/**
 * HTTP_PROXY / HTTPS_PROXY / NO_PROXY for every request firebuild makes from the host, read as Docker
 * (Go's net/http ProxyFromEnvironment) reads them, so one environment means the same to `docker pull`
 * and to firebuild:
 * - the upper-case name wins over the lower-case one (the first that is set and not empty);
 * - http:// URLs use HTTP_PROXY, https:// URLs HTTPS_PROXY (no fallback from one to the other);
 * - a proxy given as `host:port` is `http://host:port`; http and https proxies are supported;
 * - `localhost` and loopback addresses never go through a proxy;
 * - NO_PROXY is comma separated: `*` (nothing is proxied), an IP address or CIDR range, a domain
 *   (`example.com` covers it and its subdomains, `.example.com` and `*.example.com` only subdomains),
 *   each optionally with `:port`.
 * Node's fetch reads none of these variables, so the requests go through a dispatcher of the undici
 * package (proxyDispatcher) that asks proxyFor for each origin, redirects included. Plain http is sent
 * to the proxy as an absolute-form request (as Go does), https is tunnelled with CONNECT.
 */
export const PROXY_VARIABLES = ['HTTP_PROXY', 'http_proxy', 'HTTPS_PROXY', 'https_proxy', 'NO_PROXY', 'no_proxy'] as const;

type Rule =
  | { kind: 'all' }
  | { kind: 'net'; list: BlockList }
  | { kind: 'ip'; list: BlockList; port: string }
  | { kind: 'domain'; suffix: string; exact: boolean; port: string };

const DEFAULT_PORT: Record<string, string> = { 'http:': '80', 'https:': '443' };

function firstSet(env: NodeJS.ProcessEnv, ...names: string[]): { name: string; value: string } | undefined {
  for (const name of names) {
    const value = env[name];
    if (value) return { name, value };
  }
  return undefined;
}

function family(ip: string): 'ipv4' | 'ipv6' {
  return isIP(ip) === 6 ? 'ipv6' : 'ipv4';
}

/** `http://host:port` of a proxy, as errors and logs may show it: never its user or password. */
export function describeProxy(p: URL): string {
  return `${p.protocol}//${p.host}`;
}

function parseProxyUrl(name: string, value: string): URL {
  const bad = (why: string): never => {
    throw new UserError(`malformed ${name} '${value.replace(/\/\/[^@/]*@/, '//***@')}': ${why} (e.g. ${name}=http://proxy.example:3128)`);
  };
  let u: URL;
  try {
    u = new URL(/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(value) ? value : `http://${value}`);
  } catch {
    return bad('not a URL');
  }
  if (u.protocol === 'socks5:' || u.protocol === 'socks5h:') bad('SOCKS proxies are not supported, give an HTTP(S) proxy');
  if (u.protocol !== 'http:' && u.protocol !== 'https:') bad(`the scheme must be http or https, not ${u.protocol.slice(0, -1)}`);
  if (!u.hostname) bad('it names no host');
  return u;
}

function parseNoProxy(value: string): Rule[] {
  const rules: Rule[] = [];
  for (const raw of value.split(',')) {
    const p = raw.trim().toLowerCase();
    if (!p) continue;
    if (p === '*') return [{ kind: 'all' }];
    const cidr = /^(.+)\/(\d{1,3})$/.exec(p);
    if (cidr && isIP(cidr[1]!)) {
      const list = new BlockList();
      try {
        list.addSubnet(cidr[1]!, Number(cidr[2]), family(cidr[1]!));
        rules.push({ kind: 'net', list });
      } catch {
        // A prefix longer than the address: ignored, as Go ignores what it cannot parse.
      }
      continue;
    }
    // host:port, [v6]:port, or a bare host / address (a bare IPv6 address has colons but no port).
    let host = p;
    let port = '';
    const hp = /^\[([^\]]+)\]:(\d+)$/.exec(p) ?? (isIP(p) ? null : /^([^:]*):(\d+)$/.exec(p));
    if (hp) {
      host = hp[1]!;
      port = hp[2]!;
      if (!host) continue;
    } else {
      host = host.replace(/^\[(.*)\]$/, '$1');
    }
    if (isIP(host)) {
      const list = new BlockList();
      list.addAddress(host, family(host));
      rules.push({ kind: 'ip', list, port });
      continue;
    }
    if (host.startsWith('*.')) host = host.slice(1);
    const exact = !host.startsWith('.');
    const suffix = domainToASCII(exact ? `x.${host}` : `x${host}`).slice(1) || (exact ? `.${host}` : host);
    rules.push({ kind: 'domain', suffix, exact, port });
  }
  return rules;
}

/** The proxy settings of one environment; `undefined` from proxyConfig when no proxy is set at all. */
export class ProxyConfig {
  private readonly rules: Rule[];

  constructor(readonly http: URL | undefined, readonly https: URL | undefined, noProxy: string) {
    this.rules = parseNoProxy(noProxy);
  }

  /** The proxy a request to `u` goes through, or undefined for a direct connection. */
  proxyFor(u: URL): URL | undefined {
    const proxy = u.protocol === 'https:' ? this.https : u.protocol === 'http:' ? this.http : undefined;
    if (!proxy) return undefined;
    const host = u.hostname.replace(/^\[(.*)\]$/, '$1').toLowerCase();
    const port = u.port || DEFAULT_PORT[u.protocol]!;
    if (host === 'localhost') return undefined;
    const ip = isIP(host) ? host : undefined;
    if (ip && isLoopback(ip)) return undefined;
    for (const r of this.rules) {
      if (r.kind === 'all') return undefined;
      if (ip && r.kind === 'net' && r.list.check(ip, family(ip))) return undefined;
      if (ip && r.kind === 'ip' && r.list.check(ip, family(ip)) && (!r.port || r.port === port)) return undefined;
      if (r.kind === 'domain' && (host.endsWith(r.suffix) || (r.exact && host === r.suffix.slice(1))) && (!r.port || r.port === port)) return undefined;
    }
    return proxy;
  }
}

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

function isLoopback(ip: string): boolean {
  return LOOPBACK.check(ip, family(ip));
}

/** The environment's proxy settings; undefined when neither HTTP_PROXY nor HTTPS_PROXY (either case) is set. A malformed one is a one-line UserError. */
export function proxyConfig(env: NodeJS.ProcessEnv = process.env): ProxyConfig | undefined {
  const http = firstSet(env, 'HTTP_PROXY', 'http_proxy');
  const https = firstSet(env, 'HTTPS_PROXY', 'https_proxy');
  if (!http && !https) return undefined;
  return new ProxyConfig(http && parseProxyUrl(http.name, http.value), https && parseProxyUrl(https.name, https.value), firstSet(env, 'NO_PROXY', 'no_proxy')?.value ?? '');
}

/** ` through proxy http://host:port` when a request to `url` goes through one (for error messages), else ''. */
export function viaProxy(url: string | URL, env: NodeJS.ProcessEnv = process.env): string {
  let p: URL | undefined;
  try {
    p = proxyConfig(env)?.proxyFor(typeof url === 'string' ? new URL(url) : url);
  } catch {
    return '';
  }
  return p ? ` through proxy ${describeProxy(p)}` : '';
}

let cached: { key: string; dispatcher: Dispatcher } | undefined;

/**
 * The undici dispatcher that routes each request by proxyFor (one per environment, kept for the
 * process's connections to be reused); undefined when no proxy is set, and then Node's own fetch
 * dispatcher is used and undici is never loaded (CLI start-up: bench/cli-start.mjs).
 */
export async function proxyDispatcher(env: NodeJS.ProcessEnv = process.env): Promise<Dispatcher | undefined> {
  const cfg = proxyConfig(env);
  if (!cfg) return undefined;
  const key = JSON.stringify(PROXY_VARIABLES.map((n) => env[n] ?? ''));
  if (cached?.key === key) return cached.dispatcher;
  const undici = await import('undici');
  const direct = new undici.Agent();
  const viaProxy = new Map<string, Dispatcher>();
  const pick = (origin: string | URL | undefined): Dispatcher => {
    const proxy = origin ? cfg.proxyFor(new URL(origin)) : undefined;
    if (!proxy) return direct;
    let agent = viaProxy.get(proxy.href);
    // proxyTunnel false: plain http goes to the proxy as `GET http://host/path` (Go does the same); https always tunnels.
    if (!agent) viaProxy.set(proxy.href, (agent = new undici.ProxyAgent({ uri: proxy.href, proxyTunnel: false })));
    return agent;
  };
  class ProxyRouter extends undici.Dispatcher {
    override dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandlers): boolean {
      return pick(opts.origin).dispatch(opts, handler);
    }

    override close(): Promise<void>;
    override close(callback: () => void): void;
    override close(callback?: () => void): Promise<void> | void {
      const p = Promise.all([direct, ...viaProxy.values()].map((d) => d.close())).then(() => undefined);
      if (!callback) return p;
      void p.then(callback);
    }

    override destroy(): Promise<void>;
    override destroy(err: Error | null): Promise<void>;
    override destroy(callback: () => void): void;
    override destroy(err: Error | null, callback: () => void): void;
    override destroy(a?: Error | null | (() => void), b?: () => void): Promise<void> | void {
      const err = typeof a === 'function' ? null : (a ?? null);
      const callback = typeof a === 'function' ? a : b;
      const p = Promise.all([direct, ...viaProxy.values()].map((d) => d.destroy(err))).then(() => undefined);
      if (!callback) return p;
      void p.then(callback);
    }
  }
  const dispatcher = new ProxyRouter();
  cached = { key, dispatcher };
  return dispatcher;
}
