import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { inspect } from 'node:util';
import { UserError, errnoCode } from './errors.js';

/**
 * Build secrets, as BuildKit has them: a secret is an id and where its value comes from (a file, an
 * environment variable, or a value an action input gave). Only the id, a file's path and a variable's
 * name are ever printed; a value lives in a SecretValue, which prints, logs and serializes as `[secret]`.
 */

/** BuildKit's limit on one secret (secretsprovider.MaxSecretSize). */
export const MAX_SECRET_BYTES = 500 * 1024;

/** A secret's bytes. `String(v)`, `JSON.stringify(v)` and `util.inspect(v)` give `[secret]`; `bytes()` gives the value. */
export class SecretValue {
  readonly #bytes: Buffer;
  constructor(bytes: Buffer | string) {
    this.#bytes = Buffer.isBuffer(bytes) ? Buffer.from(bytes) : Buffer.from(bytes, 'utf8');
  }
  bytes(): Buffer {
    return this.#bytes;
  }
  toString(): string {
    return '[secret]';
  }
  toJSON(): string {
    return '[secret]';
  }
  [inspect.custom](): string {
    return '[secret]';
  }
}

export type SecretSource =
  | { id: string; kind: 'file'; path: string }
  | { id: string; kind: 'env'; env: string }
  | { id: string; kind: 'value'; value: SecretValue };

const ID = /^[A-Za-z0-9_.-]+$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** A secret id: letters, digits, `_`, `.` and `-` (not `.` or `..`); `what` names where it came from. */
export function checkSecretId(id: string, what: string, show = true): string {
  if (!ID.test(id) || id === '.' || id === '..') throw new UserError(`${what}: ${show ? `the secret id '${id.slice(0, 80)}'` : 'the text before the first ='} is not a valid secret id: use letters, digits, '_', '.' and '-'`);
  return id;
}

export function checkEnvName(name: string, what: string): string {
  if (!ENV_NAME.test(name)) throw new UserError(`${what}: '${name.slice(0, 80)}' is not an environment variable name: use letters, digits and '_', not starting with a digit`);
  return name;
}

/** Fields of a comma-separated list where a field may be double-quoted (`"src=a,b"`, `""` inside is one quote), as docker's CSV flags. */
function csvFields(text: string, what: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        cur += '"';
        i++;
      } else if (c === '"') quoted = false;
      else cur += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  if (quoted) throw new UserError(`${what}: an unclosed double quote`);
  out.push(cur);
  return out;
}

/**
 * `--secret` as `docker buildx build --secret` takes it: `id=NAME,src=FILE` (`source=` too),
 * `id=NAME,env=VAR`, with `type=file` or `type=env` optional (`type=env,src=VAR` names the variable).
 * The id defaults to the file's base name or the variable's name; `id=NAME` alone reads the variable NAME
 * when it is set, else the file NAME (as BuildKit's secret store does). The text holds no value, only where
 * the value is.
 */
export function parseSecretFlag(spec: string, env: NodeJS.ProcessEnv = process.env, flag = '--secret'): SecretSource {
  // The text is never echoed: a mistyped flag may hold the value itself.
  const what = `malformed ${flag}`;
  let type: 'file' | 'env' | undefined;
  let id: string | undefined;
  let src: string | undefined;
  let envName: string | undefined;
  for (const field of csvFields(spec, what)) {
    const eq = field.indexOf('=');
    if (eq < 0) throw new UserError(`${what}: a field is not key=value; write id=NAME,src=FILE or id=NAME,env=VAR`);
    const key = field.slice(0, eq).trim().toLowerCase();
    const value = field.slice(eq + 1);
    if (key === 'type') {
      if (value !== 'file' && value !== 'env') throw new UserError(`${what}: type is neither file nor env`);
      type = value;
    } else if (key === 'id') id = value;
    else if (key === 'src' || key === 'source') src = value;
    else if (key === 'env') envName = value;
    // Never the value of an unknown key: it may be the secret itself.
    else throw new UserError(`${what}: unknown key '${key.slice(0, 40)}': use id, src (source), env or type`);
  }
  if (type === 'env' && envName === undefined) {
    envName = src;
    src = undefined;
  }
  if (src !== undefined && envName !== undefined) throw new UserError(`${what}: give src or env, not both`);
  if (src === '' || envName === '') throw new UserError(`${what}: ${src === '' ? 'src' : 'env'} is empty`);
  if (type === 'file' && envName !== undefined) throw new UserError(`${what}: type=file reads src=FILE, not env`);
  if (id === undefined) {
    if (src !== undefined) id = path.basename(src);
    else if (envName !== undefined) id = envName;
    else throw new UserError(`${what}: give id=NAME (with src=FILE or env=VAR)`);
  }
  checkSecretId(id, what);
  if (src === undefined && envName === undefined) {
    if (type === 'env' || (type === undefined && env[id] !== undefined)) envName = id;
    else src = id;
  }
  if (envName !== undefined) return { id, kind: 'env', env: checkEnvName(envName, what) };
  return { id, kind: 'file', path: path.resolve(src!) };
}

/** The secrets by id; a later one of the same id replaces an earlier one (as buildx's store). */
export function secretsById(sources: readonly SecretSource[]): Map<string, SecretSource> {
  return new Map(sources.map((s) => [s.id, s]));
}

/** How a source is named in messages: never its value. */
export function describeSecret(s: SecretSource): string {
  return s.kind === 'file' ? `secret '${s.id}' (file ${s.path})` : s.kind === 'env' ? `secret '${s.id}' (variable ${s.env})` : `secret '${s.id}'`;
}

/**
 * Every file source is a regular file of at most 500 KiB, checked before the build starts (buildx
 * checks them as it starts too): a missing file is one line naming the id and the path.
 */
export async function checkSecretFiles(sources: readonly SecretSource[]): Promise<void> {
  for (const s of sources) {
    if (s.kind !== 'file') continue;
    const st = await fsp.stat(s.path).catch((err: unknown) => {
      throw new UserError(`${describeSecret(s)} cannot be read (${errnoCode(err) ?? (err as Error).message}): give an existing file in src=`);
    });
    if (!st.isFile()) throw new UserError(`${describeSecret(s)} is not a regular file: give a file in src=`);
    if (st.size > MAX_SECRET_BYTES) throw new UserError(`${describeSecret(s)} is ${st.size} bytes, more than the 500 KiB a build secret may hold`);
  }
}

/** A secret's value, or undefined when its variable is not set (the secret is then missing, as in BuildKit). */
export async function readSecret(s: SecretSource, env: NodeJS.ProcessEnv = process.env): Promise<SecretValue | undefined> {
  let bytes: Buffer;
  if (s.kind === 'value') bytes = s.value.bytes();
  else if (s.kind === 'env') {
    const v = env[s.env];
    if (v === undefined) return undefined;
    bytes = Buffer.from(v, 'utf8');
  } else {
    const fh = await fsp.open(s.path, 'r').catch((err: unknown) => {
      throw new UserError(`${describeSecret(s)} cannot be read (${errnoCode(err) ?? (err as Error).message}): give an existing file in src=`);
    });
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new UserError(`${describeSecret(s)} is not a regular file: give a file in src=`);
      if (st.size > MAX_SECRET_BYTES) throw new UserError(`${describeSecret(s)} is ${st.size} bytes, more than the 500 KiB a build secret may hold`);
      bytes = await fh.readFile();
    } finally {
      await fh.close();
    }
  }
  if (bytes.length > MAX_SECRET_BYTES) throw new UserError(`${describeSecret(s)} is ${bytes.length} bytes, more than the 500 KiB a build secret may hold`);
  return new SecretValue(bytes);
}

/**
 * The action inputs docker/build-push-action has: `secrets` (`id=value` lines; a value spanning lines is
 * written as one double-quoted record, `"id=line 1\nline 2"`, `""` inside is one quote), `secret-files`
 * (`id=path`) and `secret-envs` (`id=VARIABLE`, newline or comma separated). Errors name the input and the
 * line, never a value.
 */
export function parseSecretsInput(text: string, input = 'secrets'): SecretSource[] {
  const out: SecretSource[] = [];
  const records: { text: string; line: number }[] = [];
  const src = text.replace(/\r\n/g, '\n');
  let i = 0;
  let line = 1;
  while (i < src.length) {
    // Blank space between records (and blank lines) is skipped.
    if (src[i] === '\n' || src[i] === ' ' || src[i] === '\t') {
      if (src[i] === '\n') line++;
      i++;
      continue;
    }
    const start = line;
    if (src[i] === '"') {
      let rec = '';
      i++;
      for (;;) {
        if (i >= src.length) throw new UserError(`input '${input}' line ${start}: an unclosed double quote`);
        if (src[i] === '"' && src[i + 1] === '"') {
          rec += '"';
          i += 2;
        } else if (src[i] === '"') {
          i++;
          break;
        } else {
          if (src[i] === '\n') line++;
          rec += src[i++];
        }
      }
      const end = src.indexOf('\n', i);
      const rest = src.slice(i, end < 0 ? src.length : end);
      if (rest.trim() !== '') throw new UserError(`input '${input}' line ${line}: text after the closing double quote`);
      i = end < 0 ? src.length : end;
      records.push({ text: rec, line: start });
    } else {
      const end = src.indexOf('\n', i);
      records.push({ text: src.slice(i, end < 0 ? src.length : end).trim(), line: start });
      i = end < 0 ? src.length : end;
    }
  }
  for (const r of records) {
    const eq = r.text.indexOf('=');
    if (eq <= 0) throw new UserError(`input '${input}' line ${r.line} is not id=value: write one secret a line, e.g. GIT_AUTH_TOKEN=\${{ secrets.TOKEN }}`);
    const id = checkSecretId(r.text.slice(0, eq).trim(), `input '${input}' line ${r.line}`, false);
    out.push({ id, kind: 'value', value: new SecretValue(r.text.slice(eq + 1)) });
  }
  return out;
}

/** `secret-files` (`id=path`) or `secret-envs` (`id=VARIABLE`): one a line, or comma separated. */
export function parseSecretRefsInput(text: string, input: string, kind: 'file' | 'env'): SecretSource[] {
  const out: SecretSource[] = [];
  for (const item of text.split(kind === 'env' ? /[\n,]/ : /\n/).map((s) => s.trim()).filter(Boolean)) {
    const eq = item.indexOf('=');
    const example = kind === 'file' ? 'NPMRC=/home/runner/.npmrc' : 'GIT_AUTH_TOKEN=GITHUB_TOKEN';
    if (eq <= 0 || eq === item.length - 1) throw new UserError(`input '${input}' has '${item.slice(0, 120)}': write id=${kind === 'file' ? 'path' : 'VARIABLE'}, e.g. ${example}`);
    const id = checkSecretId(item.slice(0, eq).trim(), `input '${input}'`);
    const ref = item.slice(eq + 1).trim();
    out.push(kind === 'file' ? { id, kind: 'file', path: path.resolve(ref) } : { id, kind: 'env', env: checkEnvName(ref, `input '${input}'`) });
  }
  return out;
}
