import * as core from '@actions/core';
import { pushImage } from '../../oci/artifact.js';
import { openStorage, resolveSettings } from '../../profile/settings.js';
import { ActionsLogger, boolInput, input, summaryTable } from '../common.js';

/**
 * The publish action, OCI target: the stored image as a firebuild OCI artifact (see docs/registry.md),
 * credentials from inputs (the password is masked in logs) or the runner's Docker config.
 */
export interface PublishInputs {
  tag: string;
  ociRef: string;
  username: string;
  password: string;
  insecure: boolean;
}

export function getInputs(): PublishInputs {
  const i = {
    tag: input('tag', { required: true }),
    ociRef: input('oci-ref', { required: true }),
    username: input('registry-username'),
    password: input('registry-password'),
    insecure: boolInput('insecure'),
  };
  if (i.password) core.setSecret(i.password);
  return i;
}

export async function run(): Promise<void> {
  const i = getInputs();
  const storage = openStorage(resolveSettings({}, undefined));
  const r = await core.group(`Push ${i.tag} to ${i.ociRef}`, () => pushImage(storage, i.tag, i.ociRef, {
    ...(i.username ? { credentials: { username: i.username, password: i.password } } : {}),
    insecure: i.insecure,
  }, new ActionsLogger('publish')));
  core.setOutput('digest', r.digest);
  core.setOutput('ref', `${i.ociRef.replace(/[:@][^/]*$/, '')}@${r.digest}`);
  core.setOutput('sha256', r.rootfsSha256);
  await core.summary.addHeading(`firebuild publish: ${i.tag}`, 3).addRaw(summaryTable([
    ['OCI artifact', `\`${i.ociRef}\``], ['digest', `\`${r.digest}\``], ['rootfs sha256', `\`${r.rootfsSha256}\``], ['compressed size', `${r.compressedSize} bytes`],
  ])).write();
}
