import type { Subject } from '@actions/attest';
import * as core from '@actions/core';
import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { artifactNameOf, attachProvenance, packageForRelease, provenanceSubjects, publishToRegistry, sbomForPublish, type PublishOptions } from '../../commands/publish.js';
import { openStorage } from '../../profile/settings.js';
import { formatTag, parseTag, type Tag } from '../../store/tag.js';
import { UserError } from '../../util/errors.js';
import { ActionsLogger, actionSettings, actionsWorkDir, boolInput, input, listInput, uploadArtifact } from '../common.js';
import { formatDuration, formatSize, summaryInput, writeSummary, type Cell } from '../summary.js';
import { publishRelease } from './release.js';

/**
 * The publish action: a stored image to an OCI registry as a firebuild artifact (docs/registry.md)
 * and/or to a GitHub release as assets (rootfs.ext4.zst, metadata.json, SHA256SUMS). Registry
 * credentials from inputs (masked) or the runner's Docker config; the release through the GitHub API
 * with `github-token`.
 */
export const TARGETS = ['oci', 'release', 'artifact'] as const;
export const ATTEST_CHOICES = ['auto', 'true', 'false'] as const;

export interface PublishInputs {
  tag: Tag;
  targets: string[];
  ociRef: string;
  username: string;
  password: string;
  insecure: boolean;
  githubToken: string;
  releaseTag: string;
  overwrite: boolean;
  artifactName: string;
  /** auto: when the workflow grants id-token (the runner then sets ACTIONS_ID_TOKEN_REQUEST_URL) and a token is given. */
  attest: (typeof ATTEST_CHOICES)[number];
  /** Keep build args in what is published (input `include-build-args`). */
  includeBuildArgs: boolean;
  /** Make the SPDX SBOM and publish it with the image (input `sbom`). */
  sbom: boolean;
  /** Write the job summary (input `summary`). */
  summary: boolean;
}

export function getInputs(): PublishInputs {
  const targets = listInput('targets');
  const t = targets.length ? targets : ['oci'];
  for (const x of t) if (!(TARGETS as readonly string[]).includes(x)) throw new UserError(`input 'targets' has '${x}': use oci, release and/or artifact`);
  const i = {
    tag: parseTag(input('tag', { required: true })),
    targets: t,
    ociRef: input('oci-ref', { required: t.includes('oci') }),
    username: input('registry-username'),
    password: input('registry-password'),
    insecure: boolInput('insecure'),
    githubToken: input('github-token'),
    releaseTag: input('release-tag', { default: process.env.GITHUB_REF_NAME ?? '' }),
    overwrite: boolInput('overwrite'),
    artifactName: input('artifact-name'),
    attest: input('attest', { choices: ATTEST_CHOICES, default: 'auto' }) as PublishInputs['attest'],
    includeBuildArgs: boolInput('include-build-args'),
    sbom: boolInput('sbom', true),
    summary: summaryInput(),
  };
  if (i.password) core.setSecret(i.password);
  if (i.githubToken) core.setSecret(i.githubToken);
  if (t.includes('release') && !i.releaseTag) throw new UserError("input 'release-tag' is required for the release target outside a tag push");
  if (i.attest === 'true' && !process.env.ACTIONS_ID_TOKEN_REQUEST_URL) throw new UserError("attest is 'true' but the job has no OIDC token: grant 'permissions: id-token: write' and 'attestations: write' to the job");
  if (i.attest === 'true' && !i.githubToken) throw new UserError("attest is 'true' and needs input 'github-token' (with attestations: write) to store the attestation");
  return i;
}

export async function run(): Promise<void> {
  const i = getInputs();
  const tag = formatTag(i.tag);
  const storage = openStorage(await actionSettings());
  const started = Date.now();
  const rows: [string, Cell][] = [];
  const commands: { label: string; command: string }[] = [];
  const log = new ActionsLogger('publish');
  const registry = {
    ...(i.username ? { credentials: { username: i.username, password: i.password } } : {}),
    insecure: i.insecure,
  };
  // The repository this workflow runs in and its commit: the manifest's source and revision annotations.
  const env = process.env;
  const publish: PublishOptions = {
    ...(env.GITHUB_SERVER_URL && env.GITHUB_REPOSITORY ? { source: `${env.GITHUB_SERVER_URL}/${env.GITHUB_REPOSITORY}` } : {}),
    ...(env.GITHUB_SHA ? { revision: env.GITHUB_SHA } : {}),
    includeBuildArgs: i.includeBuildArgs,
  };
  const sbom = i.sbom ? await core.group(`SBOM of ${tag}`, () => sbomForPublish(storage, i.tag, log)) : undefined;
  if (sbom) {
    const file = path.join(await actionsWorkDir('sbom-'), 'sbom.spdx.json');
    await fsp.writeFile(file, sbom.bytes, { mode: 0o644 });
    core.setOutput('sbom', file);
    rows.push(['SBOM', `SPDX 2.3, ${sbom.packages} packages`]);
  }
  const pushed = i.targets.includes('oci')
    ? await core.group(`Push ${tag} to ${i.ociRef}`, () => publishToRegistry(storage, i.tag, i.ociRef, registry, { ...publish, ...(sbom ? { sbom: sbom.bytes } : {}) }, log))
    : undefined;
  if (pushed) {
    core.setOutput('digest', pushed.digest);
    core.setOutput('ref', pushed.refByDigest);
    core.setOutput('sha256', pushed.rootfsSha256);
    rows.push(['OCI artifact', { code: i.ociRef }], ['digest', { code: pushed.digest }], ['compressed size', formatSize(pushed.compressedSize)], ['rootfs sha256', { code: pushed.rootfsSha256 }]);
    if (pushed.sbom) rows.push(['SBOM referrer', { code: pushed.sbom.digest }]);
    commands.push({ label: 'Pull it into a firebuild store (by digest: exactly this image):', command: `firebuild image pull ${pushed.refByDigest}` });
  }
  const needsPackage = i.targets.includes('release') || i.targets.includes('artifact');
  const dir = needsPackage ? await actionsWorkDir('publish-') : '';
  const pkg = needsPackage ? await core.group(`Package ${tag}`, () => packageForRelease(storage, i.tag, dir, { includeBuildArgs: i.includeBuildArgs, ...(sbom ? { sbom: sbom.bytes } : {}) })) : undefined;
  if (pkg) core.setOutput('sha256', pkg.sums['rootfs.ext4'] as string);
  if (pkg && i.targets.includes('artifact')) {
    const name = i.artifactName || artifactNameOf(i.tag);
    const r = await core.group(`Artifact ${name}`, () => uploadArtifact(name, pkg.files, pkg.dir));
    core.setOutput('artifact-id', String(r.id ?? ''));
    rows.push(['artifact', `${name} (${formatSize(r.size ?? 0)})`]);
  }
  if (pkg && i.targets.includes('release')) {
    const r = await core.group(`Release ${i.releaseTag}`, () => publishRelease({
      token: i.githubToken, repository: process.env.GITHUB_REPOSITORY ?? '', tag: i.releaseTag, files: pkg.files, overwrite: i.overwrite,
      ...(process.env.GITHUB_API_URL ? { apiUrl: process.env.GITHUB_API_URL } : {}),
    }));
    core.setOutput('release-url', r.url);
    rows.push(['release', { link: r.url, text: i.releaseTag }], ...r.assets.map((a): [string, Cell] => ['asset', { link: a, text: a.replace(/^.*\//, '') }]));
  }
  if (i.attest === 'true' || (i.attest === 'auto' && process.env.ACTIONS_ID_TOKEN_REQUEST_URL && i.githubToken)) {
    const subjects = provenanceSubjects(pushed, pkg, sbom ? createHash('sha256').update(sbom.bytes).digest('hex') : undefined);
    const a = await core.group('Build provenance', () => attest(subjects, i.githubToken));
    core.setOutput('attestation-id', a.id ?? '');
    core.setOutput('attestation-bundle', a.bundlePath);
    rows.push(['provenance', a.url ? { link: a.url, text: `SLSA v1, ${subjects.length} subjects` } : `SLSA v1, ${subjects.length} subjects`]);
    if (pushed) {
      // Beside the image in the registry too, as a referrer of its manifest.
      const d = await core.group('Provenance to the registry', () => attachProvenance(storage, i.tag, i.ociRef, pushed, { ...(a.mediaType ? { mediaType: a.mediaType } : {}), data: a.bundle, predicateType: 'https://slsa.dev/provenance/v1' }, registry, log));
      core.setOutput('attestation-referrer', d.digest);
      rows.push(['provenance referrer', { code: d.digest }]);
    }
  } else if (i.attest === 'auto') {
    rows.push(['provenance', 'not attested: grant id-token: write and attestations: write and give github-token']);
  }
  rows.push(['duration', formatDuration(Date.now() - started)]);
  await writeSummary({ title: `firebuild publish: ${tag}`, facts: rows, commands }, i.summary);
}

/**
 * SLSA build provenance for the published files through @actions/attest: the runner's OIDC token, a
 * Sigstore signing certificate (GitHub's instance for private repositories, the public-good one for
 * public repositories), and the attestations API of the repository. The bundle is kept in a fresh directory under the actions' private one (RUNNER_TEMP).
 */
async function attest(subjects: Subject[], token: string): Promise<{ id?: string; url?: string; bundlePath: string; bundle: Buffer; mediaType?: string }> {
  const { attestProvenance } = await import('@actions/attest');
  let a: Awaited<ReturnType<typeof attestProvenance>>;
  try {
    a = await attestProvenance({ subjects, token });
  } catch (err) {
    const msg = (err as Error).message;
    const hint = /403|Resource not accessible|permission/i.test(msg) ? ": grant the job 'permissions: attestations: write' (and id-token: write)" : '';
    throw new UserError(`build provenance failed: ${msg.split('\n')[0]}${hint}`);
  }
  const bundlePath = path.join(await actionsWorkDir('provenance-'), 'provenance.sigstore.json');
  const bundle = Buffer.from(JSON.stringify(a.bundle));
  await fsp.writeFile(bundlePath, Buffer.concat([bundle, Buffer.from('\n')]), { mode: 0o644 });
  const mediaType = typeof a.bundle.mediaType === 'string' ? a.bundle.mediaType : undefined;
  const repo = process.env.GITHUB_REPOSITORY;
  const url = a.attestationID && repo ? `${process.env.GITHUB_SERVER_URL ?? 'https://github.com'}/${repo}/attestations/${a.attestationID}` : undefined;
  return { ...(a.attestationID ? { id: a.attestationID } : {}), ...(url ? { url } : {}), bundlePath, bundle, ...(mediaType ? { mediaType } : {}) };
}
