import { aliasInput, boolInput, input, listInput } from '../common.js';
import { ENGINES, type BuildInputs } from '../build-rootfs/impl.js';
import { summaryInput } from '../summary.js';
import { labelsInput, secretsInput, sshInput, tagsInput } from '../build-inputs.js';

/** build-baseos: the same build as build-rootfs, stored as a baseos image; the tag may come from FROM. */
export function getInputs(): BuildInputs {
  const [tag = '', ...moreTags] = tagsInput(false);
  // First: every secret value is masked before anything could print it.
  const secrets = secretsInput();
  return {
    secrets,
    sshAgents: sshInput(),
    dockerfile: aliasInput('dockerfile', 'file', { required: true }),
    context: input('context'),
    tag,
    moreTags,
    labels: labelsInput(),
    noCache: boolInput('no-cache'),
    pull: boolInput('pull'),
    vmlinuxId: '',
    buildArgs: listInput('build-args'),
    target: input('target'),
    engine: input('engine', { choices: ENGINES, default: 'docker' }),
    dockerImage: '',
    dockerImageBase: '',
    size: input('size'),
    freeSpace: input('free-space', { default: '256M' }),
    overwrite: boolInput('overwrite'),
    // The step cache belongs to the vm engine, which builds rootfs images only.
    stepCache: false,
    cacheVersion: '1',
    cacheFrom: [],
    cacheTo: '',
    cacheMaxSize: '',
    // Mirrors are for the vm engine's FROM; baseos builds use the Docker engine (its own daemon.json mirrors).
    registryMirrors: [],
    summary: summaryInput(),
    network: '',
    backend: 'auto',
    cniNetwork: '',
    cniConfDir: '/etc/cni/conf.d',
  };
}
