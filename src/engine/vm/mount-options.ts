import { UserError } from '../../util/errors.js';

/** What `RUN --mount` options share across mount types (BuildKit's spellings of booleans, its modes and ids). */

/** BuildKit's booleans (Go's strconv.ParseBool). */
export const TRUE = new Set(['1', 't', 'T', 'true', 'TRUE', 'True']);
export const FALSE = new Set(['0', 'f', 'F', 'false', 'FALSE', 'False']);

const MAX_ID = 4294967294;

/**
 * `mode` (octal, up to 07777) or `uid`/`gid` (decimal, up to 2^32-2) of a mount, `def` when absent; a bad
 * value is one line naming the option, `example` showing a good mode.
 */
export function mountIntOption(m: Record<string, string>, key: 'mode' | 'uid' | 'gid', def: number, what: string, where: { file: string; line: number }, example: string): number {
  const v = m[key];
  if (v === undefined) return def;
  const octal = key === 'mode';
  const max = octal ? 0o7777 : MAX_ID;
  const ok = octal ? /^0?[0-7]{1,4}$/.test(v) : /^\d{1,10}$/.test(v);
  const n = ok ? parseInt(v, octal ? 8 : 10) : NaN;
  if (!ok || n > max) throw new UserError(`${what}: ${key}=${v.slice(0, 20)} is not ${octal ? `an octal mode (e.g. ${example})` : `a number up to ${max}`}`, where);
  return n;
}
