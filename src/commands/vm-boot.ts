import * as fsp from 'node:fs/promises';
import { checkNotEphemeral, parseEphemeralRange } from '../profile/instance.js';
import type { Settings } from '../profile/settings.js';
import { launchVm, type LaunchSpec } from '../runtime/launch.js';
import { RunCache, type VmState } from '../runtime/state.js';
import { parsePort } from '../net/network.js';
import type { StorageProvider } from '../store/provider.js';
import { UserError } from '../util/errors.js';
import { actingUid } from '../util/safe-open.js';
import type { Logger } from '../util/logger.js';
import { vmSettingsFor, type VmChoice } from './vm-settings.js';

/** What the VM use cases (run, smoke, ls, kill...) work with: the profile's settings and the storage they name. */
export interface VmContext {
  settings: Settings;
  storage: StorageProvider;
}

/**
 * A VM to boot from a stored image, as both faces give it (`run`'s flags, the smoke-test action's inputs):
 * numbers and durations already parsed; env files, bare `--env` names, the key file and the ports are read
 * and checked here, once.
 */
export interface BootRequest extends Pick<LaunchSpec, 'from' | 'name' | 'vmlinuxId' | 'memMib' | 'cpus' | 'hostname' | 'sshUser' | 'accel' | 'command' | 'bootTimeoutMs' | 'init' | 'onCreated'> {
  /** `KEY=value`, or a bare `KEY` taking this process's value; over the env files' entries. */
  env: string[];
  /** KEY=value files, applied in order before `env`. */
  envFiles: string[];
  /** The SSH public key file for `sshUser` (a private key is refused). */
  identityFile?: string;
  /** `[hostip:]hostport:guestport[/proto]`; the host side defaults to 127.0.0.1, or every address with CNI. */
  ports: string[];
  /** The backend and network, as the face chose them. */
  machine: VmChoice;
  /** An address to request from the CNI network's IPAM (`--ip-address`). */
  ipAddress?: string;
}

export function runCacheOf(settings: Settings): RunCache {
  return new RunCache(settings.runCache, { actingUid: actingUid(), cgroupParent: settings.cgroupParent });
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
async function runEnv(o: Pick<BootRequest, 'env' | 'envFiles'>): Promise<string[]> {
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

/**
 * Boot a stored image as a microVM in the background (runtime/launch.ts); returns once the init has started
 * the command. The VM is owned by this process (a SIGINT/SIGTERM tears it down) until the caller kills it
 * or hands it on (disownVm).
 */
export async function bootVm(r: BootRequest, ctx: VmContext, log: Logger): Promise<VmState> {
  const vm = await vmSettingsFor(r.machine, ctx.settings);
  if (vm.portRange && r.ports.length) {
    const from = ctx.settings.origin['port-range'] === 'default' ? 'FIREBUILD_PORT_RANGE' : ctx.settings.origin['port-range'] === 'flag' ? '--port-range' : `profile ${ctx.settings.profile ?? ''}'s port-range`;
    const text = await fsp.readFile('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').catch(() => '');
    checkNotEphemeral(vm.portRange, parseEphemeralRange(text), from);
  }
  const { env: _env, envFiles: _files, identityFile, ports, machine: _machine, ipAddress, ...rest } = r;
  return launchVm({
    ...rest,
    ...vm,
    ...(vm.cni ? { cni: { ...vm.cni, ...(ipAddress ? { ip: ipAddress } : {}) } } : {}),
    env: await runEnv(r),
    ...(identityFile ? { authorizedKeys: await authorizedKeysOf(identityFile) } : {}),
    ports: ports.map((p) => parsePort(p, vm.network === 'cni' ? '0.0.0.0' : '127.0.0.1')),
  }, ctx.storage, runCacheOf(ctx.settings), log);
}
