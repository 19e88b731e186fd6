import { createPublicKey, generateKeyPairSync, randomUUID, sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type * as net from 'node:net';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Local stand-ins for the services @actions/attest talks to, which cannot be reached from here: the
 * runner's OIDC token endpoint (ACTIONS_ID_TOKEN_REQUEST_URL) and its issuer's JWKS
 * (token.actions.githubusercontent.com), GitHub's Sigstore instance — Fulcio (fulcio.githubapp.com:
 * checks the OIDC token and the proof of possession, then issues a certificate with openssl) and the
 * RFC 3161 timestamp authority (timestamp.githubapp.com: a real `openssl ts -reply`) — and the
 * repository's attestations API. The client's fixed https hosts reach this process through a private
 * /etc/hosts bind-mounted in a mount namespace around the action (`wrap`), and its TLS certificate is
 * trusted through NODE_EXTRA_CA_CERTS: the client code runs unchanged.
 */
export const HOSTS = ['token.actions.githubusercontent.com', 'fulcio.githubapp.com', 'timestamp.githubapp.com'];
export const ISSUER = 'https://token.actions.githubusercontent.com';

export interface SigstoreStandin {
  env: NodeJS.ProcessEnv;
  /** Prefix for the action's command line: a mount namespace whose /etc/hosts sends HOSTS to 127.0.0.1. */
  wrap: string[];
  caPem: string;
  attestations: { owner: string; repo: string; bundle: Record<string, unknown>; auth?: string }[];
  /** Status for the attestations API (403 plays a job without attestations: write). */
  attestationStatus: number;
  claims: Record<string, unknown>;
  close(): void;
}

const openssl = (args: string[], cwd: string): Buffer => execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });

function b64url(b: Buffer | string): string {
  return Buffer.from(b).toString('base64url');
}

function jwt(claims: Record<string, unknown>, key: KeyObject, kid: string): string {
  const head = b64url(JSON.stringify({ alg: 'RS256', typ: 'JWT', kid }));
  const body = b64url(JSON.stringify(claims));
  return `${head}.${body}.${b64url(cryptoSign('sha256', Buffer.from(`${head}.${body}`), key))}`;
}

export async function startSigstoreStandin(dir: string): Promise<SigstoreStandin> {
  fs.mkdirSync(dir, { recursive: true });
  // A CA, the TLS certificate for the three hosts, and a timestamping certificate.
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/O=firebuild test/CN=test sigstore CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  fs.writeFileSync(path.join(dir, 'tls.ext'), `subjectAltName=${HOSTS.map((h) => `DNS:${h}`).join(',')}\nextendedKeyUsage=serverAuth\n`);
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'tls.key', '-out', 'tls.csr', '-subj', '/CN=fulcio.githubapp.com'], dir);
  openssl(['x509', '-req', '-in', 'tls.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', 'tls.ext', '-out', 'tls.pem'], dir);
  fs.writeFileSync(path.join(dir, 'tsa.ext'), 'extendedKeyUsage=critical,timeStamping\nkeyUsage=critical,digitalSignature\n');
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'tsa.key', '-out', 'tsa.csr', '-subj', '/CN=test timestamp authority'], dir);
  openssl(['x509', '-req', '-in', 'tsa.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', 'tsa.ext', '-out', 'tsa.pem'], dir);
  fs.writeFileSync(path.join(dir, 'ts.cnf'), [
    '[ tsa ]', 'default_tsa = tsa1', '[ tsa1 ]', `serial = ${path.join(dir, 'tsaserial')}`, 'crypto_device = builtin', `signer_cert = ${path.join(dir, 'tsa.pem')}`,
    `certs = ${path.join(dir, 'ca.pem')}`, `signer_key = ${path.join(dir, 'tsa.key')}`, 'signer_digest = sha256', 'default_policy = 1.3.6.1.4.1.57264.2', 'digests = sha256',
    'accuracy = secs:1', 'ordering = no', 'tsa_name = no', 'ess_cert_id_chain = no', 'ess_cert_id_alg = sha256', '',
  ].join('\n'));
  fs.writeFileSync(path.join(dir, 'tsaserial'), '01\n');
  fs.writeFileSync(path.join(dir, 'hosts'), `127.0.0.1 localhost ${HOSTS.join(' ')}\n::1 localhost\n`);

  const oidc = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = randomUUID();
  const jwk = { ...oidc.publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
  const claims: Record<string, unknown> = {
    iss: ISSUER, sub: 'repo:acme/app:ref:refs/tags/v1', ref: 'refs/tags/v1', sha: 'a'.repeat(40), repository: 'acme/app', repository_owner: 'acme',
    event_name: 'push', job_workflow_ref: 'acme/app/.github/workflows/release.yml@refs/tags/v1', workflow_ref: 'acme/app/.github/workflows/release.yml@refs/tags/v1',
    repository_id: '1', repository_owner_id: '2', runner_environment: 'self-hosted', run_id: '77', run_attempt: '1',
  };
  const requestToken = randomUUID();
  const s: SigstoreStandin = {
    env: {}, wrap: [], caPem: path.join(dir, 'ca.pem'), attestations: [], attestationStatus: 201, claims, close: () => undefined,
  };

  const readBody = (req: http.IncomingMessage): Promise<Buffer> => new Promise((resolve) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
  });
  const json = (res: http.ServerResponse, code: number, j: unknown): void => {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(j));
  };
  let serial = 100;

  // The https side: the OIDC issuer, Fulcio and the TSA, told apart by Host.
  const tls = https.createServer({ key: fs.readFileSync(path.join(dir, 'tls.key')), cert: fs.readFileSync(path.join(dir, 'tls.pem')) }, (req, res) => {
    void readBody(req).then((body) => {
      const host = (req.headers.host ?? '').replace(/:\d+$/, '');
      if (host === HOSTS[0] && req.url === '/.well-known/openid-configuration') return json(res, 200, { issuer: ISSUER, jwks_uri: `${ISSUER}/.well-known/jwks` });
      if (host === HOSTS[0] && req.url === '/.well-known/jwks') return json(res, 200, { keys: [jwk] });
      if (host === HOSTS[1] && req.method === 'POST' && req.url === '/api/v2/signingCert') {
        const q = JSON.parse(body.toString()) as { credentials: { oidcIdentityToken: string }; publicKeyRequest: { publicKey: { content: string }; proofOfPossession: string } };
        const [h, p, sig] = q.credentials.oidcIdentityToken.split('.');
        if (!cryptoVerify('sha256', Buffer.from(`${h}.${p}`), oidc.publicKey, Buffer.from(sig ?? '', 'base64url'))) return json(res, 401, { code: 16, message: 'invalid identity token' });
        const tokenClaims = JSON.parse(Buffer.from(p ?? '', 'base64url').toString()) as { sub: string; aud: string };
        if (tokenClaims.aud !== 'sigstore') return json(res, 401, { code: 16, message: `audience ${tokenClaims.aud} is not sigstore` });
        const pub = createPublicKey(q.publicKeyRequest.publicKey.content);
        if (!cryptoVerify('sha256', Buffer.from(tokenClaims.sub), pub, Buffer.from(q.publicKeyRequest.proofOfPossession, 'base64'))) return json(res, 400, { code: 3, message: 'proof of possession failed' });
        const n = serial++;
        fs.writeFileSync(path.join(dir, `pub-${n}.pem`), pub.export({ type: 'spki', format: 'pem' }));
        fs.writeFileSync(path.join(dir, `leaf-${n}.ext`), `subjectAltName=URI:https://github.com/${String(claims.job_workflow_ref)}\nextendedKeyUsage=codeSigning\nkeyUsage=critical,digitalSignature\n`);
        openssl(['x509', '-new', '-subj', '/O=sigstore.dev', '-force_pubkey', `pub-${n}.pem`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', String(n), '-days', '1', '-extfile', `leaf-${n}.ext`, '-out', `leaf-${n}.pem`], dir);
        return json(res, 201, { signedCertificateEmbeddedSct: { chain: { certificates: [fs.readFileSync(path.join(dir, `leaf-${n}.pem`), 'utf8'), fs.readFileSync(path.join(dir, 'ca.pem'), 'utf8')] } } });
      }
      if (host === HOSTS[2] && req.method === 'POST' && req.url === '/api/v1/timestamp') {
        const q = JSON.parse(body.toString()) as { artifactHash: string; hashAlgorithm: string };
        const n = serial++;
        openssl(['ts', '-query', '-digest', Buffer.from(q.artifactHash, 'base64').toString('hex'), '-sha256', '-cert', '-no_nonce', '-out', `q-${n}.tsq`], dir);
        openssl(['ts', '-reply', '-config', 'ts.cnf', '-queryfile', `q-${n}.tsq`, '-out', `r-${n}.tsr`], dir);
        res.writeHead(201, { 'content-type': 'application/timestamp-reply' });
        return res.end(fs.readFileSync(path.join(dir, `r-${n}.tsr`)));
      }
      json(res, 404, { message: `not a stand-in for ${req.method} https://${host}${req.url}` });
    });
  });
  await new Promise<void>((resolve, reject) => {
    tls.once('error', reject);
    tls.listen(443, '127.0.0.1', () => resolve());
  });

  // The plain-http side: the runner's token endpoint and the attestations API (GITHUB_API_URL).
  const api = http.createServer((req, res) => {
    void readBody(req).then((body) => {
      const url = new URL(req.url ?? '/', 'http://127.0.0.1');
      if (url.pathname === '/token') {
        if (req.headers.authorization !== `Bearer ${requestToken}`) return json(res, 401, { message: 'bad request token' });
        const now = Math.floor(Date.now() / 1000);
        return json(res, 200, { value: jwt({ ...claims, aud: url.searchParams.get('audience') ?? '', iat: now, nbf: now - 5, exp: now + 600 }, oidc.privateKey, kid) });
      }
      const m = /^\/repos\/([^/]+)\/([^/]+)\/attestations$/.exec(url.pathname);
      if (m && req.method === 'POST') {
        if (s.attestationStatus !== 201) return json(res, s.attestationStatus, { message: 'Resource not accessible by integration' });
        const q = JSON.parse(body.toString()) as { bundle: Record<string, unknown> };
        s.attestations.push({ owner: m[1]!, repo: m[2]!, bundle: q.bundle, ...(req.headers.authorization ? { auth: req.headers.authorization } : {}) });
        return json(res, 201, { id: 4242 });
      }
      json(res, 404, { message: `not a stand-in for ${req.method} ${url.pathname}` });
    });
  });
  await new Promise<void>((resolve) => api.listen(0, '127.0.0.1', () => resolve()));
  const port = (api.address() as net.AddressInfo).port;
  s.env = {
    ACTIONS_ID_TOKEN_REQUEST_URL: `http://127.0.0.1:${port}/token?api-version=2.0`,
    ACTIONS_ID_TOKEN_REQUEST_TOKEN: requestToken,
    GITHUB_API_URL: `http://127.0.0.1:${port}`,
    GITHUB_SERVER_URL: 'https://github.com',
    GITHUB_REPOSITORY: 'acme/app',
    NODE_EXTRA_CA_CERTS: path.join(dir, 'ca.pem'),
  };
  s.env.FIREBUILD_TEST_HOSTS = path.join(dir, 'hosts');
  s.wrap = ['unshare', '--mount', '--propagation', 'private', '--', process.execPath, '--import', path.join(path.dirname(fileURLToPath(import.meta.url)), 'mount-hosts.mjs')];
  s.close = () => {
    tls.close();
    api.close();
  };
  return s;
}
