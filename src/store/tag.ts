import { UserError } from '../util/errors.js';

/**
 * Image tags are `org/name:version`, following Docker's reference grammar
 * (distribution/reference): lower-case path components separated by `.`, `_`, `__` or dashes, and a tag of
 * `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`. The org may also be `_`, the seed's spelling for images with no
 * organisation (`FROM alpine:3.12` becomes `_/alpine:3.12`).
 */
const COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const VERSION = '[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}';
const TAG_RE = new RegExp(`^(_|${COMPONENT})/(${COMPONENT}):(${VERSION})$`);
const COMPONENT_RE = new RegExp(`^${COMPONENT}$`);

export interface Tag {
  org: string;
  name: string;
  version: string;
}

export function parseTag(s: string): Tag {
  const m = TAG_RE.exec(s);
  if (!m) {
    throw new UserError(`malformed tag '${s}': use org/name:version (lower-case org and name of [a-z0-9._-], version of [A-Za-z0-9_.-], e.g. acme/web:1.2-rc1)`);
  }
  const [, org, name, version] = m as unknown as [string, string, string, string];
  if (name.length + org.length + 1 > 255) throw new UserError(`tag '${s}' is too long: keep org/name under 256 characters`);
  return { org, name, version };
}

export function formatTag(t: Tag): string {
  return `${t.org}/${t.name}:${t.version}`;
}

export function isValidTag(s: string): boolean {
  return TAG_RE.test(s);
}

export function isValidComponent(s: string): boolean {
  return COMPONENT_RE.test(s);
}
