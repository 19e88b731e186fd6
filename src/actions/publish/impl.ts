import * as core from '@actions/core';
import * as os from 'node:os';
import * as path from 'node:path';
import { pushImage } from '../../oci/artifact.js';
import { openStorage } from '../../profile/settings.js';
import { packageImage } from '../../store/package.js';
import { UserError } from '../../util/errors.js';
import { ActionsLogger, actionSettings, boolInput, input, listInput, summaryTable, uploadArtifact } from '../common.js';
import { publishRelease } from './release.js';

/**
 * The publish action: a stored image to an OCI registry as a firebuild artifact (docs/registry.md)
 * and/or to a GitHub release as assets (rootfs.ext4.zst, metadata.json, SHA256SUMS). Registry
 * credentials from inputs (masked) or the runner's Docker config; the release through the GitHub API
 * with `github-token`.
 */
export const TARGETS = ['oci', 'release', 'artifact'] as const;

export interface PublishInputs {
  tag: string;
  targets: string[];
  ociRef: string;
  username: string;
  password: string;
  insecure: boolean;
  githubToken: string;
  releaseTag: string;
  overwrite: boolean;
  artifactName: string;
}

export function getInputs(): PublishInputs {
  const targets = listInput('targets');
  const t = targets.length ? targets : ['oci'];
  for (const x of t) if (!(TARGETS as readonly string[]).includes(x)) throw new UserError(`input 'targets' has '${x}': use oci, release and/or artifact`);
  const i = {
    tag: input('tag', { required: true }),
    targets: t,
    ociRef: input('oci-ref', { required: t.includes('oci') }),
    username: input('registry-username'),
    password: input('registry-password'),
    insecure: boolInput('insecure'),
    githubToken: input('github-token'),
    releaseTag: input('release-tag', { default: process.env.GITHUB_REF_NAME ?? '' }),
    overwrite: boolInput('overwrite'),
    artifactName: input('artifact-name'),
  };
  if (i.password) core.setSecret(i.password);
  if (i.githubToken) core.setSecret(i.githubToken);
  if (t.includes('release') && !i.releaseTag) throw new UserError("input 'release-tag' is required for the release target outside a tag push");
  return i;
}

export async function run(): Promise<void> {
  const i = getInputs();
  const storage = openStorage(await actionSettings());
  const rows: [string, string][] = [];
  if (i.targets.includes('oci')) {
    const r = await core.group(`Push ${i.tag} to ${i.ociRef}`, () => pushImage(storage, i.tag, i.ociRef, {
      ...(i.username ? { credentials: { username: i.username, password: i.password } } : {}),
      insecure: i.insecure,
    }, new ActionsLogger('publish')));
    core.setOutput('digest', r.digest);
    core.setOutput('ref', `${i.ociRef.replace(/[:@][^/]*$/, '')}@${r.digest}`);
    core.setOutput('sha256', r.rootfsSha256);
    rows.push(['OCI artifact', `\`${i.ociRef}\``], ['digest', `\`${r.digest}\``], ['rootfs sha256', `\`${r.rootfsSha256}\``], ['compressed size', `${r.compressedSize} bytes`]);
  }
  const needsPackage = i.targets.includes('release') || i.targets.includes('artifact');
  const dir = path.join(process.env.RUNNER_TEMP ?? os.tmpdir(), `firebuild-publish-${process.pid}`);
  const pkg = needsPackage ? await core.group(`Package ${i.tag}`, () => packageImage(storage, i.tag, dir)) : undefined;
  if (pkg) core.setOutput('sha256', pkg.sums['rootfs.ext4'] as string);
  if (pkg && i.targets.includes('artifact')) {
    const name = i.artifactName || `firebuild-${i.tag.replace(/[/:]/g, '-')}`;
    const r = await core.group(`Artifact ${name}`, () => uploadArtifact(name, pkg.files, pkg.dir));
    core.setOutput('artifact-id', String(r.id ?? ''));
    rows.push(['artifact', `${name} (${r.size ?? 0} bytes)`]);
  }
  if (pkg && i.targets.includes('release')) {
    const r = await core.group(`Release ${i.releaseTag}`, () => publishRelease({
      token: i.githubToken, repository: process.env.GITHUB_REPOSITORY ?? '', tag: i.releaseTag, files: pkg.files, overwrite: i.overwrite,
      ...(process.env.GITHUB_API_URL ? { apiUrl: process.env.GITHUB_API_URL } : {}),
    }));
    core.setOutput('release-url', r.url);
    rows.push(['release', r.url], ...r.assets.map((a): [string, string] => ['asset', a]));
  }
  await core.summary.addHeading(`firebuild publish: ${i.tag}`, 3).addRaw(summaryTable(rows)).write();
}
