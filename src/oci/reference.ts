import { UserError } from '../util/errors.js';

/**
 * Image references normalized as Docker normalizes them (distribution/reference ParseNormalizedNamed
 * and TagNameOnly): `alpine:3.20` -> `docker.io/library/alpine:3.20`, `user/app` ->
 * `docker.io/user/app:latest`, `host:5000/x` stays on that host, `index.docker.io` is `docker.io`, a
 * digest is kept (and, as in Docker, is what is pulled when a tag is given too). No npm package among
 * firebuild's dependencies does this, and the grammar is small: this file is its table-tested copy.
 */
export const DOCKER_HUB = 'docker.io';
/** The host docker.io's registry API answers on (what `docker pull` talks to). */
export const DOCKER_HUB_API = 'registry-1.docker.io';

export interface NormalizedRef {
  /** The registry's name as Docker writes it: `docker.io`, `ghcr.io`, `127.0.0.1:5000`. */
  domain: string;
  /** `library/alpine`, `user/app`, `team/base`. */
  repository: string;
  tag?: string;
  digest?: string;
  /** What a registry is asked for: the digest when there is one, else the tag (`latest` when none). */
  reference: string;
  /** `docker.io/library/alpine:3.20`, `docker.io/library/alpine@sha256:...`. */
  full: string;
}

// distribution/reference's grammar: a domain of dot-separated labels (or a bracketed IPv6 address) with
// an optional port; path components of lower-case alphanumerics joined by `.`, `_`, `__` or dashes.
const DOMAIN_RE = /^(?:(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])(?:\.(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]))*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?$/;
const PATH_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const TAG_RE = /^[\w][\w.-]{0,127}$/;
const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;
const HEX64_RE = /^[a-f0-9]{64}$/;
const NAME_MAX = 255;

/** `s` as Docker reads it; a reference Docker would refuse is a one-line UserError saying why. */
export function normalizeRef(s: string): NormalizedRef {
  const bad = (why: string): never => {
    throw new UserError(`invalid image reference '${s}': ${why}`);
  };
  if (s === '') bad('it is empty');
  if (HEX64_RE.test(s)) bad('a 64-character hexadecimal string is an image id, not a name');
  let rest = s;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST_RE.test(digest)) bad('a digest must be sha256:<64 lower-case hex digits>');
  }
  // The tag is after the last colon that comes after the last slash (a colon before it is a port).
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) bad('a tag is up to 128 of [A-Za-z0-9_.-], not starting with . or -');
  }
  // Docker's splitDockerDomain: the first component is a host when it has a dot or a port, is
  // localhost, or has upper-case letters (a repository never does); else the name is on docker.io.
  const slash = rest.indexOf('/');
  const first = slash < 0 ? '' : rest.slice(0, slash);
  let domain = DOCKER_HUB;
  let repository = rest;
  if (slash >= 0 && (/[.:]/.test(first) || first === 'localhost' || first.toLowerCase() !== first)) {
    domain = first;
    repository = rest.slice(slash + 1);
    if (!DOMAIN_RE.test(domain)) bad(`'${domain}' is not a registry host`);
  }
  if (domain === 'index.docker.io') domain = DOCKER_HUB;
  if (domain === DOCKER_HUB && !repository.includes('/')) repository = `library/${repository}`;
  if (repository.toLowerCase() !== repository) bad('the repository name must be lower-case');
  if (!PATH_RE.test(repository)) bad('the repository name is lower-case letters and digits, separated by . _ __ - or /');
  const name = `${domain}/${repository}`;
  if (name.length > NAME_MAX) bad(`the name is longer than ${NAME_MAX} characters`);
  if (!tag && !digest) tag = 'latest';
  return {
    domain,
    repository,
    ...(tag ? { tag } : {}),
    ...(digest ? { digest } : {}),
    reference: digest ?? tag!,
    full: `${name}${tag ? `:${tag}` : ''}${digest ? `@${digest}` : ''}`,
  };
}
