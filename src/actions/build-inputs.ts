import * as core from '@actions/core';
import { formatTag, isValidTag, parseTag } from '../store/tag.js';
import { UserError } from '../util/errors.js';
import { parseSecretRefsInput, parseSecretsInput, type SecretSource } from '../util/secrets.js';
import { parseSshFlag, type SshAgentSource } from '../util/ssh-agent.js';
import { input, listInput } from './common.js';

/** The inputs build-rootfs and build-baseos share with docker/build-push-action: `tags`, `labels` and the secrets. */

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

/** Mask a secret in the job's log: the whole value and, for a value of several lines, each line of it (the runner masks line by line). */
function mask(value: string): void {
  if (!value) return;
  core.setSecret(value);
  const lines = value.split(/\r?\n/).map((l) => l.trim()).filter((l) => l.length >= 4);
  if (lines.length > 1) for (const l of lines) core.setSecret(l);
}

/**
 * docker/build-push-action's secret inputs: `secrets` (`id=value` lines; every value masked in the log
 * before anything else runs), `secret-files` (`id=path`) and `secret-envs` (`id=VARIABLE`; the variable's
 * value masked too). A later secret of the same id wins.
 */
export function secretsInput(): SecretSource[] {
  const values = parseSecretsInput(input('secrets'), 'secrets');
  for (const s of values) if (s.kind === 'value') mask(s.value.bytes().toString('utf8'));
  const envs = parseSecretRefsInput(input('secret-envs'), 'secret-envs', 'env');
  for (const s of envs) if (s.kind === 'env') mask(process.env[s.env] ?? '');
  return [...values, ...parseSecretRefsInput(input('secret-files'), 'secret-files', 'file'), ...envs];
}

/** docker/build-push-action's `ssh`: one `default` or `ID=SOCKET` a line, as `--ssh`. */
export function sshInput(): SshAgentSource[] {
  return listInput('ssh').map((x) => parseSshFlag(x, process.env, "input 'ssh'"));
}
