import * as core from '@actions/core';
import { buildWithVm } from '../../build/vm-engine.js';
import { buildWithDocker } from '../../commands/build.js';
import type { StoredImage } from '../../store/provider.js';
import { UserError } from '../../util/errors.js';
import { defaultCacheDir } from '../../profile/profile.js';
import { openStorage } from '../../profile/settings.js';
import { parseSize } from '../../util/size.js';
import { ActionsLogger, actionSettings, boolInput, input, listInput, summaryTable } from '../common.js';

/** The build-rootfs action (and build-baseos, with type baseos): the CLI's `rootfs`/`baseos` build. */
export interface BuildInputs {
  dockerfile: string;
  context: string;
  tag: string;
  buildArgs: string[];
  target: string;
  engine: string;
  dockerImage: string;
  dockerImageBase: string;
  size: string;
  freeSpace: string;
  overwrite: boolean;
}

export const ENGINES = ['docker'] as const;
/** build-rootfs also offers firebuild's own engine (RUN steps inside microVMs). */
export const ROOTFS_ENGINES = ['docker', 'vm'] as const;

export function getInputs(): BuildInputs {
  const dockerImage = input('docker-image');
  return {
    dockerfile: input('dockerfile', { required: !dockerImage }),
    context: input('context'),
    tag: input('tag', { required: true }),
    buildArgs: listInput('build-args'),
    target: input('target'),
    engine: input('engine', { choices: ROOTFS_ENGINES, default: 'docker' }),
    dockerImage,
    dockerImageBase: input('docker-image-base'),
    size: input('size'),
    freeSpace: input('free-space', { default: '256M' }),
    overwrite: boolInput('overwrite'),
  };
}

export async function run(type: 'rootfs' | 'baseos', i: BuildInputs): Promise<void> {
  const log = new ActionsLogger(type);
  const storage = openStorage(await actionSettings());
  if (i.engine === 'vm') {
    if (type !== 'rootfs' || !i.dockerfile) throw new UserError("engine 'vm' builds a rootfs from a dockerfile: give 'dockerfile', or use engine 'docker'");
    const v = await core.group(`Build ${i.tag} with the vm engine`, () => buildWithVm({
      dockerfile: i.dockerfile, ...(i.context ? { context: i.context } : {}), buildArgs: i.buildArgs, ...(i.target ? { target: i.target } : {}), tag: i.tag,
      ...(i.size ? { sizeBytes: parseSize(i.size, 'size') } : {}), freeBytes: parseSize(i.freeSpace, 'free-space'), overwrite: i.overwrite, cacheDir: defaultCacheDir(),
    }, storage, log));
    return report(type, v.image, 'vm', [['steps run', String(v.executed)], ['steps from the cache', String(v.cached)]]);
  }
  const r = await core.group(`Build ${i.tag || i.dockerfile}`, () => buildWithDocker({
    type,
    engine: 'docker',
    ...(i.dockerfile ? { dockerfile: i.dockerfile } : {}),
    ...(i.context ? { context: i.context } : {}),
    buildArgs: i.buildArgs,
    ...(i.target ? { target: i.target } : {}),
    ...(i.tag ? { tag: i.tag } : {}),
    ...(i.dockerImage ? { dockerImage: i.dockerImage } : {}),
    ...(i.dockerImageBase ? { dockerImageBase: i.dockerImageBase } : {}),
    ...(i.size ? { sizeBytes: parseSize(i.size, 'size') } : {}),
    freeBytes: parseSize(i.freeSpace, 'free-space'),
    journal: false,
    overwrite: i.overwrite,
    cacheDir: defaultCacheDir(),
  }, storage, log));
  return report(type, r.image, r.builder, []);
}

async function report(type: 'rootfs' | 'baseos', image: StoredImage, builder: string, extra: [string, string][]): Promise<void> {
  const m = image.metadata;
  core.setOutput('tag', image.tag);
  core.setOutput('rootfs', image.rootfsPath);
  core.setOutput('sha256', m.rootfs.sha256);
  core.setOutput('size', String(m.rootfs.apparentSize));
  core.setOutput('metadata', image.metadataPath);
  await core.summary.addHeading(`firebuild ${type}: ${image.tag}`, 3).addRaw(summaryTable([
    ['tag', `\`${image.tag}\``], ['source', m.source.ref], ['builder', builder], ['sha256', `\`${m.rootfs.sha256}\``], ['size', `${m.rootfs.apparentSize} bytes`], ...extra,
  ])).write();
}
