import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { UserError } from '../util/errors.js';
import { helperGet, TOKEN_USERNAME } from './credential-helper.js';

/**
 * Registry credentials from the Docker config, found the way the Docker CLI finds them
 * (cli/config/configfile GetCredentialsStore + credentials.nativeStore), so whatever `docker login`
 * or a cloud's helper set up works unchanged:
 * 1. DOCKER_AUTH_CONFIG (a config.json document in the environment): its `auths` entry, when it has one;
 * 2. else `credHelpers[<key>]`: that helper alone answers for the registry;
 * 3. else `credsStore`: that helper answers for every registry;
 * 4. else `auths[<key>]` of the config file ($DOCKER_CONFIG/config.json, else ~/.docker/config.json).
 * When a helper applies (2, 3) the file's `auths` credentials are not used, as in Docker (it keeps only
 * the e-mail from there): a helper's "not found" means anonymous. The key is `https://index.docker.io/v1/`
 * for Docker Hub (docker.io, index.docker.io, registry-1.docker.io), else the registry's host[:port]; an
 * `auths` key written as a URL (`https://host/v1/`) matches its host.
 */
export const DOCKER_HUB_CONFIG_KEY = 'https://index.docker.io/v1/';
const HUB_HOSTS = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);

export interface Credentials {
  username: string;
  password: string;
  /** An identity (refresh) token (a helper's `<token>` user, or `identitytoken` in auths): traded at the token service for access tokens. */
  identityToken?: string;
  /** Where they came from, for messages (never the secret): `docker-credential-desktop (credsStore in ...)`. */
  source?: string;
}

interface AuthEntry { auth?: unknown; username?: unknown; password?: unknown; identitytoken?: unknown }

export interface DockerConfig {
  /** The file it came from (or `DOCKER_AUTH_CONFIG`), for messages. */
  file: string;
  auths: Record<string, AuthEntry>;
  credsStore?: string;
  credHelpers: Record<string, string>;
}

export type CredentialSource =
  | { kind: 'helper'; helper: string; from: string }
  | { kind: 'auths'; key: string; entry: AuthEntry; file: string }
  | { kind: 'none' };

/** The Docker config's key for a registry's credentials. */
export function configKey(registry: string): string {
  return HUB_HOSTS.has(registry) ? DOCKER_HUB_CONFIG_KEY : registry;
}

/** `https://host:port/v1/` -> `host:port`, as Docker's ConvertToHostname. */
function hostOf(key: string): string {
  const stripped = key.includes('://') ? key.slice(key.indexOf('://') + 3) : key;
  return stripped.split('/')[0] ?? '';
}

function parseConfig(text: string, file: string): DockerConfig {
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch {
    throw new UserError(`the Docker config ${file} is not valid JSON: fix it, or point DOCKER_CONFIG at another directory`);
  }
  if (!j || typeof j !== 'object' || Array.isArray(j)) throw new UserError(`the Docker config ${file} is not a JSON object: fix it, or point DOCKER_CONFIG at another directory`);
  const o = j as { auths?: unknown; credsStore?: unknown; credHelpers?: unknown };
  const obj = (v: unknown, what: string): Record<string, unknown> => {
    if (v === undefined || v === null) return {};
    if (typeof v !== 'object' || Array.isArray(v)) throw new UserError(`the Docker config ${file} has a malformed ${what} (an object is expected)`);
    return v as Record<string, unknown>;
  };
  const credHelpers: Record<string, string> = {};
  for (const [k, v] of Object.entries(obj(o.credHelpers, 'credHelpers'))) {
    if (typeof v !== 'string') throw new UserError(`the Docker config ${file} has a malformed credHelpers entry for ${k} (a helper name is expected)`);
    credHelpers[k] = v;
  }
  if (o.credsStore !== undefined && typeof o.credsStore !== 'string') throw new UserError(`the Docker config ${file} has a malformed credsStore (a helper name is expected)`);
  const auths = obj(o.auths, 'auths') as Record<string, AuthEntry>;
  return { file, auths, credHelpers, ...(o.credsStore ? { credsStore: o.credsStore } : {}) };
}

/** `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. */
export function dockerConfigFile(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(env.DOCKER_CONFIG || path.join(env.HOME || os.homedir(), '.docker'), 'config.json');
}

/** The Docker config file; undefined when there is none. Malformed: a one-line UserError. */
export async function readDockerConfig(env: NodeJS.ProcessEnv = process.env): Promise<DockerConfig | undefined> {
  const file = dockerConfigFile(env);
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw new UserError(`cannot read the Docker config ${file} (${code ?? (err as Error).message}): fix its permissions, or point DOCKER_CONFIG at another directory`);
  }
  return parseConfig(text, file);
}

/** DOCKER_AUTH_CONFIG, when set: a config.json document whose `auths` come first. */
export function envAuthConfig(env: NodeJS.ProcessEnv = process.env): DockerConfig | undefined {
  const v = env.DOCKER_AUTH_CONFIG;
  return v ? parseConfig(v, 'DOCKER_AUTH_CONFIG') : undefined;
}

/** An `auths` entry for the key: exact, else a key whose host is the key (`https://host/v1/` for `host`). */
function authsEntry(auths: Record<string, AuthEntry>, key: string): [string, AuthEntry] | undefined {
  if (auths[key]) return [key, auths[key]];
  for (const [k, v] of Object.entries(auths)) if (hostOf(k) === key) return [k, v];
  // Docker Hub's credentials written under a bare host by other tools.
  if (key === DOCKER_HUB_CONFIG_KEY) for (const [k, v] of Object.entries(auths)) if (HUB_HOSTS.has(hostOf(k))) return [k, v];
  return undefined;
}

/** Where a registry's credentials come from, in Docker's order (see the top of this file). Pure: no helper is run. */
export function credentialSource(registry: string, file: DockerConfig | undefined, fromEnv?: DockerConfig): CredentialSource {
  const key = configKey(registry);
  const inEnv = fromEnv && authsEntry(fromEnv.auths, key);
  if (inEnv) return { kind: 'auths', key: inEnv[0], entry: inEnv[1], file: fromEnv.file };
  if (!file) return { kind: 'none' };
  const helper = file.credHelpers[key];
  if (helper) return { kind: 'helper', helper, from: `credHelpers["${key}"] in ${file.file}` };
  if (file.credsStore) return { kind: 'helper', helper: file.credsStore, from: `credsStore in ${file.file}` };
  const entry = authsEntry(file.auths, key);
  return entry ? { kind: 'auths', key: entry[0], entry: entry[1], file: file.file } : { kind: 'none' };
}

/** The credentials of an `auths` entry: `auth` (base64 user:password), else username/password; `identitytoken` alongside. */
export function entryCredentials(entry: AuthEntry, key: string, file: string): Credentials | undefined {
  const bad = (): never => {
    throw new UserError(`the Docker config ${file} has a malformed auth for ${key} (base64 of user:password is expected): run docker login ${hostOf(key)} again`);
  };
  let username = '';
  let password = '';
  if (entry.auth !== undefined && entry.auth !== '') {
    if (typeof entry.auth !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(entry.auth)) bad();
    const dec = Buffer.from(entry.auth as string, 'base64').toString('utf8');
    const i = dec.indexOf(':');
    if (i <= 0) bad();
    username = dec.slice(0, i);
    password = dec.slice(i + 1).replace(/\0+$/, '');
  } else if (typeof entry.username === 'string' && typeof entry.password === 'string') {
    username = entry.username;
    password = entry.password;
  }
  const identityToken = typeof entry.identitytoken === 'string' && entry.identitytoken ? entry.identitytoken : undefined;
  if (!username && !identityToken) return undefined;
  return { username, password, ...(identityToken ? { identityToken } : {}) };
}

/**
 * The credentials for `registry` (a host[:port]; Docker Hub by any of its names), or undefined for
 * anonymous access. Runs a credential helper when the config names one for it.
 */
export async function dockerConfigCredentials(registry: string, env: NodeJS.ProcessEnv = process.env): Promise<Credentials | undefined> {
  const src = credentialSource(registry, await readDockerConfig(env), envAuthConfig(env));
  if (src.kind === 'none') return undefined;
  if (src.kind === 'auths') {
    const c = entryCredentials(src.entry, src.key, src.file);
    return c && { ...c, source: `auths["${src.key}"] in ${src.file}` };
  }
  const answer = await helperGet({ helper: src.helper, serverUrl: configKey(registry), registry, from: src.from, env });
  if (!answer) return undefined;
  const source = `docker-credential-${src.helper} (${src.from})`;
  if (answer.username === TOKEN_USERNAME) return { username: '', password: '', identityToken: answer.secret, source };
  return { username: answer.username, password: answer.secret, source };
}
