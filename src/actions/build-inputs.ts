import { formatTag, isValidTag, parseTag } from '../store/tag.js';
import { UserError } from '../util/errors.js';
import { input, listInput } from './common.js';

/** The inputs build-rootfs and build-baseos share with docker/build-push-action: `tags` and `labels`. */

/**
 * `tag` and `tags` (docker/build-push-action's list, newline or comma separated): every tag, checked,
 * duplicates dropped; the first is where the image is built, the others get copies.
 */
export function tagsInput(required: boolean): string[] {
  const tag = input('tag');
  const tags = listInput('tags');
  const named: [string, string][] = [...(tag ? [['tag', tag] as [string, string]] : []), ...tags.map((x): [string, string] => ['tags', x])];
  for (const [name, t] of named) {
    if (!isValidTag(t)) throw new UserError(`input '${name}' has '${t}': use org/name:version (lower-case org and name), e.g. acme/web:1.2`);
  }
  const all = [tag, ...tags].filter(Boolean);
  if (required && all.length === 0) throw new UserError("input 'tag' (or 'tags') is required: set it under with: in the workflow");
  return [...new Set(all.map((t) => formatTag(parseTag(t))))];
}

/** `labels`: NAME=value, one per line (or comma separated), as docker/build-push-action's. */
export function labelsInput(): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const l of listInput('labels')) {
    const eq = l.indexOf('=');
    if (eq <= 0) throw new UserError(`input 'labels' has '${l}': write NAME=value, e.g. org.opencontainers.image.title=web`);
    labels[l.slice(0, eq).trim()] = l.slice(eq + 1).trim();
  }
  return labels;
}
