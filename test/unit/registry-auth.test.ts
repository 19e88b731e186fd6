import { describe, expect, test } from '@jest/globals';
import { configKey, credentialSource, DOCKER_HUB_CONFIG_KEY, entryCredentials, envAuthConfig, type DockerConfig } from '../../src/oci/docker-config.js';
import { proxyConfig, viaProxy } from '../../src/util/proxy.js';
import { UserError } from '../../src/util/errors.js';

const b64 = (s: string): string => Buffer.from(s).toString('base64');
const cfg = (c: Partial<DockerConfig>): DockerConfig => ({ file: '/h/.docker/config.json', auths: {}, credHelpers: {}, ...c });

describe('which credentials a registry gets, in Docker\'s order (cli/config/configfile GetCredentialsStore)', () => {
  test('Docker Hub by any of its names is the key https://index.docker.io/v1/; other registries are their host[:port]', () => {
    for (const r of ['docker.io', 'index.docker.io', 'registry-1.docker.io']) expect(configKey(r)).toBe(DOCKER_HUB_CONFIG_KEY);
    expect(configKey('ghcr.io')).toBe('ghcr.io');
    expect(configKey('127.0.0.1:5000')).toBe('127.0.0.1:5000');
  });

  test('credHelpers for the registry beats credsStore, which beats auths; the auths credentials are not used when a helper applies', () => {
    const c = cfg({ credsStore: 'desktop', credHelpers: { 'gcr.io': 'gcloud', [DOCKER_HUB_CONFIG_KEY]: 'hub' }, auths: { 'gcr.io': { auth: b64('u:p') }, 'ghcr.io': { auth: b64('u:p') } } });
    expect(credentialSource('gcr.io', c)).toEqual({ kind: 'helper', helper: 'gcloud', from: 'credHelpers["gcr.io"] in /h/.docker/config.json' });
    expect(credentialSource('docker.io', c)).toMatchObject({ kind: 'helper', helper: 'hub' });
    // ghcr.io has an auths entry, but credsStore is set: the helper answers (Docker keeps only the e-mail of auths).
    expect(credentialSource('ghcr.io', c)).toEqual({ kind: 'helper', helper: 'desktop', from: 'credsStore in /h/.docker/config.json' });
    expect(credentialSource('quay.io', c)).toMatchObject({ kind: 'helper', helper: 'desktop' });
  });

  test('without helpers, auths: the exact key, a URL key of the host, Docker Hub under its legacy names; none is anonymous', () => {
    const c = cfg({ auths: { 'https://ghcr.io/v1/': { auth: b64('a:b') }, 'index.docker.io': { auth: b64('h:p') }, 'q.io': { username: 'x', password: 'y' } } });
    expect(credentialSource('ghcr.io', c)).toMatchObject({ kind: 'auths', key: 'https://ghcr.io/v1/' });
    expect(credentialSource('docker.io', c)).toMatchObject({ kind: 'auths', key: 'index.docker.io' });
    expect(credentialSource('q.io', c)).toMatchObject({ kind: 'auths', key: 'q.io' });
    expect(credentialSource('other.io', c)).toEqual({ kind: 'none' });
    expect(credentialSource('other.io', undefined)).toEqual({ kind: 'none' });
    // A credHelpers entry for another registry does not apply.
    expect(credentialSource('q.io', cfg({ ...c, credHelpers: { 'gcr.io': 'gcloud' } }))).toMatchObject({ kind: 'auths', key: 'q.io' });
  });

  test('DOCKER_AUTH_CONFIG comes first when it has the registry, else the file decides', () => {
    const fromEnv = envAuthConfig({ DOCKER_AUTH_CONFIG: JSON.stringify({ auths: { 'ghcr.io': { auth: b64('env:pw') } } }) });
    const c = cfg({ credsStore: 'desktop' });
    expect(credentialSource('ghcr.io', c, fromEnv)).toEqual({ kind: 'auths', key: 'ghcr.io', entry: { auth: b64('env:pw') }, file: 'DOCKER_AUTH_CONFIG' });
    expect(credentialSource('quay.io', c, fromEnv)).toMatchObject({ kind: 'helper', helper: 'desktop' });
    expect(() => envAuthConfig({ DOCKER_AUTH_CONFIG: '{nope' })).toThrow(/^the Docker config DOCKER_AUTH_CONFIG is not valid JSON/);
  });

  test('an auths entry: base64 user:password (the password may hold colons), username/password, an identity token; malformed is one line', () => {
    expect(entryCredentials({ auth: b64('ci:s3:cr:et') }, 'r', 'f')).toEqual({ username: 'ci', password: 's3:cr:et' });
    expect(entryCredentials({ username: 'u', password: 'p' }, 'r', 'f')).toEqual({ username: 'u', password: 'p' });
    expect(entryCredentials({ identitytoken: 'tok' }, 'r', 'f')).toEqual({ username: '', password: '', identityToken: 'tok' });
    expect(entryCredentials({ auth: b64('u:p'), identitytoken: 'tok' }, 'r', 'f')).toEqual({ username: 'u', password: 'p', identityToken: 'tok' });
    // `docker login` with a credsStore leaves an empty entry: no credentials.
    expect(entryCredentials({}, 'r', 'f')).toBeUndefined();
    for (const auth of [b64('nocolon'), b64(':nouser'), 'not base64!', 42]) {
      let err: unknown;
      try {
        entryCredentials({ auth }, 'ghcr.io', '/h/config.json');
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(UserError);
      expect((err as Error).message).toBe('the Docker config /h/config.json has a malformed auth for ghcr.io (base64 of user:password is expected): run docker login ghcr.io again');
    }
  });
});

describe('HTTP_PROXY / HTTPS_PROXY / NO_PROXY as Go (and so Docker) reads them', () => {
  const P = 'http://proxy.example:3128';
  const via = (url: string, env: NodeJS.ProcessEnv): string | undefined => proxyConfig(env)?.proxyFor(new URL(url))?.host;

  test('no proxy variable: nothing is proxied, and no config is made', () => {
    expect(proxyConfig({ NO_PROXY: 'x' })).toBeUndefined();
    expect(viaProxy('http://example.com/', {})).toBe('');
  });

  test('http URLs use HTTP_PROXY, https URLs HTTPS_PROXY, with no fallback from one to the other', () => {
    expect(via('http://reg.example/v2/', { HTTP_PROXY: P })).toBe('proxy.example:3128');
    expect(via('https://reg.example/v2/', { HTTP_PROXY: P })).toBeUndefined();
    expect(via('https://reg.example/v2/', { HTTPS_PROXY: 'https://sp.example' })).toBe('sp.example');
    expect(via('http://reg.example/v2/', { HTTPS_PROXY: 'https://sp.example' })).toBeUndefined();
  });

  test('upper case wins over lower case; an empty value counts as unset; host:port means http://host:port', () => {
    expect(via('http://r.example/', { HTTP_PROXY: 'http://upper:1', http_proxy: 'http://lower:2' })).toBe('upper:1');
    expect(via('http://r.example/', { HTTP_PROXY: '', http_proxy: 'lower:2' })).toBe('lower:2');
    expect(proxyConfig({ HTTP_PROXY: 'p.example:8080' })!.http!.href).toBe('http://p.example:8080/');
    expect(via('http://r.example/', { HTTP_PROXY: P, NO_PROXY: '', no_proxy: 'r.example' })).toBeUndefined();
  });

  test('localhost and loopback addresses are never proxied', () => {
    for (const u of ['http://localhost:5000/', 'http://127.0.0.1:5000/', 'http://127.9.9.9/', 'http://[::1]:5000/']) expect(via(u, { HTTP_PROXY: P })).toBeUndefined();
    expect(via('http://192.0.2.2:5000/', { HTTP_PROXY: P })).toBe('proxy.example:3128');
  });

  test.each([
    ['*', 'http://anything.example/', false],
    ['example.com', 'http://example.com/', false],
    ['example.com', 'http://reg.example.com/', false],
    ['example.com', 'http://notexample.com/', true],
    ['.example.com', 'http://example.com/', true],
    ['.example.com', 'http://a.example.com/', false],
    ['*.example.com', 'http://example.com/', true],
    ['*.example.com', 'http://a.b.example.com/', false],
    ['example.com:8080', 'http://example.com:8080/', false],
    ['example.com:8080', 'http://example.com/', true],
    ['example.com:80', 'http://example.com/', false],
    ['10.0.0.0/8', 'http://10.1.2.3/', false],
    ['10.0.0.0/8', 'http://11.1.2.3/', true],
    ['192.0.2.2', 'http://192.0.2.2:5000/', false],
    ['192.0.2.2:5000', 'http://192.0.2.2:5000/', false],
    ['192.0.2.2:5001', 'http://192.0.2.2:5000/', true],
    ['fd00::/8', 'http://[fd00::1]/', false],
    ['[fd00::1]:80', 'http://[fd00::1]/', false],
    [' a.example , EXAMPLE.com ', 'http://Reg.Example.com/', false],
  ])('NO_PROXY=%j: %s proxied: %s', (noProxy, url, proxied) => {
    expect(via(url, { HTTP_PROXY: P, NO_PROXY: noProxy })).toBe(proxied ? 'proxy.example:3128' : undefined);
  });

  test('a malformed or unsupported proxy is one line, without the password of a proxy URL', () => {
    expect(() => proxyConfig({ HTTPS_PROXY: 'socks5://s:1080' })).toThrow(/^malformed HTTPS_PROXY 'socks5:\/\/s:1080': SOCKS proxies are not supported/);
    expect(() => proxyConfig({ HTTP_PROXY: 'ftp://u:secret@p:21' })).toThrow(/^malformed HTTP_PROXY 'ftp:\/\/\*\*\*@p:21': the scheme must be http or https, not ftp/);
    expect(() => proxyConfig({ http_proxy: 'http://[bad' })).toThrow(/^malformed http_proxy 'http:\/\/\[bad': not a URL/);
    // Errors name the proxy without its credentials.
    expect(viaProxy('http://r.example/', { HTTP_PROXY: 'http://u:secret@p.example:3128' })).toBe(' through proxy http://p.example:3128');
  });
});
