import * as fsp from 'node:fs/promises';
import { launchVm, type LaunchSpec } from '../runtime/launch.js';
import type { RunCache, VmState } from '../runtime/state.js';
import { parsePort } from '../net/network.js';
import type { StorageProvider } from '../store/provider.js';
import { UserError } from '../util/errors.js';
import type { Logger } from '../util/logger.js';

// The VM lifecycle lives in runtime/ (launch, stop), the network's values in net/network.ts, the backend
// choice in vmm/backend.ts; re-exported here for the callers that still import them from this file.
export { launchVm, type LaunchSpec } from '../runtime/launch.js';
export { killVm, purgeVms, requestStop, teardown, vmDiskFull } from '../runtime/stop.js';
export { pickKernel } from '../runtime/kernel.js';
export { disownVm } from '../runtime/owner.js';
export { exitCodeOf, followConsole, readConsole } from '../runtime/console.js';
export { CNI_IFNAME, DEFAULT_LOCK_DIR, NETWORK_MODES, USER_NET, cniBinDir, parsePort, type NetworkMode, type PortSpec } from '../net/network.js';
export { chooseBackend, type BackendName } from '../vmm/backend.js';

/** `firebuild run`'s options as the faces give them: env files, `--env` names and the key file still unread. */
export interface RunOptions extends Omit<LaunchSpec, 'env' | 'ports' | 'authorizedKeys'> {
  env: string[];
  envFiles: string[];
  identityFile?: string;
  ports: string[];
}

export function parseEnvFile(text: string, file: string): string[] {
  const out: string[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    const l = line.trim();
    if (l === '' || l.startsWith('#')) return;
    const kv = l.replace(/^export\s+/, '');
    if (!/^[A-Za-z_][A-Za-z0-9_]*=/.test(kv)) throw new UserError(`${file}:${i + 1}: not KEY=value`);
    out.push(kv);
  });
  return out;
}

const PUBLIC_KEY_RE = /^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/=]+( .*)?$/;

/** Env files in order, then `--env` (a bare name takes this process's value): the entries over the image's ENV. */
async function runEnv(o: Pick<RunOptions, 'env' | 'envFiles'>): Promise<string[]> {
  const out: string[] = [];
  for (const f of o.envFiles) {
    const text = await fsp.readFile(f, 'utf8').catch(() => {
      throw new UserError(`env file ${f} not found: check the --env-file path`);
    });
    out.push(...parseEnvFile(text, f));
  }
  for (const e of o.env) {
    if (e.includes('=')) {
      out.push(e);
      continue;
    }
    const v = process.env[e];
    if (v === undefined) throw new UserError(`--env ${e} has no value and is not set here: write --env ${e}=value`);
    out.push(`${e}=${v}`);
  }
  return out;
}

/** The authorized_keys text of `--identity-file`: public keys only (a private key is refused). */
async function authorizedKeysOf(file: string): Promise<string> {
  const text = (await fsp.readFile(file, 'utf8').catch(() => {
    throw new UserError(`identity file ${file} not found`);
  })).trim();
  if (!text.split('\n').every((l) => PUBLIC_KEY_RE.test(l.trim()))) {
    throw new UserError(`identity file ${file} is not an SSH public key: give the .pub file (never the private key)`);
  }
  return text + '\n';
}

/** Boot a stored image as a microVM in the background (see launchVm); returns once the init has started the command. */
export async function runVm(o: RunOptions, storage: StorageProvider, cache: RunCache, log: Logger): Promise<VmState> {
  const { env: _env, envFiles: _files, identityFile, ports, ...rest } = o;
  const spec: LaunchSpec = {
    ...rest,
    env: await runEnv(o),
    ...(identityFile ? { authorizedKeys: await authorizedKeysOf(identityFile) } : {}),
    ports: ports.map((p) => parsePort(p, o.network === 'cni' ? '0.0.0.0' : '127.0.0.1')),
  };
  return launchVm(spec, storage, cache, log);
}

/** `inspect` in the seed's shape: `.NetworkInterfaces[0].StaticConfiguration.IPConfiguration.IP`. */
export function inspectView(s: VmState & { running?: boolean }): Record<string, unknown> {
  return {
    ...s,
    NetworkInterfaces: s.network.ip ? [{ StaticConfiguration: { IPConfiguration: { IP: s.network.ip } } }] : [],
  };
}
