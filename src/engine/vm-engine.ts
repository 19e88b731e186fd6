import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import type Docker from 'dockerode';
import { DEFAULT_LOCK_DIR, pickKernel, runVm, teardown, type NetworkMode, type RunOptions } from '../commands/run.js';
import { DockerEngine } from './docker-engine.js';
import { fromDockerConfig } from './image-config.js';
import { convertTarStream } from '../rootfs/convert.js';
import { registryImageToExt4, resolveRegistryImage, type RegistryImage } from '../oci/image-pull.js';
import { parseRef } from '../oci/registry.js';
import { parseBuildArgs } from '../commands/plan.js';
import { buildPlan } from '../dockerfile/plan.js';
import type { Plan, Stage, Step } from '../dockerfile/plan-schema.js';
import { injectGuest, removeGuest } from '../guest/prepare.js';
import { Debugfs, mayBeMissing, quote, type WriteCommand } from '../rootfs/debugfs.js';
import { Ext4Image } from '../rootfs/ext4-read.js';
import { Ext4Tools } from '../rootfs/ext4.js';
import { RunCache, vmmOf } from '../runtime/state.js';
import { vmmAlive } from '../runtime/vmm-process.js';
import { resolveSource } from '../source/resolve.js';
import type { ImageConfig } from '../store/metadata.js';
import type { StorageProvider, StoredImage } from '../store/provider.js';
import { formatTag, parseTag } from '../store/tag.js';
import { UserError } from '../util/errors.js';
import { exec } from '../util/exec.js';
import { diskFullError, requireFree } from '../util/disk-space.js';
import { copySparse, diskUsage } from '../util/fs.js';
import type { Logger } from '../util/logger.js';
import { StepCache } from './step-cache.js';
import { withDownloads, type Downloads } from '../source/downloads.js';
import { applyCopy, applyWorkdir, chownOwner, imageAccounts, userOwner } from './vm-fs.js';

/**
 * firebuild's own build engine (`rootfs --engine vm`): no Docker engine, and no step of the Dockerfile
 * runs on the host. Each stage starts from a copy of its base (a stored firebuild image, or an earlier
 * stage) grown to the build size. RUN boots that copy as a microVM (QEMU here; user-mode networking),
 * with the step's command, environment, USER and WORKDIR on the config disk, the output streamed live;
 * the guest is shut down cleanly and the image checked (`e2fsck -fn`). COPY, ADD and WORKDIR are applied
 * to the image offline through debugfs. Every file-system step's result is cached under a key chained
 * from its parent's key and its inputs (the instruction after expansion, resource digests, USER, WORKDIR),
 * so an unchanged rebuild boots nothing and a change at step k rebuilds from k.
 */
export interface VmBuildOptions {
  dockerfile: string;
  context?: string;
  buildArgs?: string[];
  target?: string;
  tag: string;
  /** The build disk (and at least the final image's) size; default: the base plus 1 GiB. */
  sizeBytes?: number;
  freeBytes?: number;
  overwrite?: boolean;
  cacheDir: string;
  vmlinuxId?: string;
  memMib?: number;
  accel?: string;
  stepTimeoutMs?: number;
  noCache?: boolean;
  /** The step cache's cap; least recently used entries go first. */
  cacheMaxBytes?: number;
  /** How build VMs boot (default: QEMU with user-mode networking, its run cache under cacheDir). */
  vm?: BuildVmSettings;
  /** The largest ADD URL or http context file (default: FIREBUILD_MAX_DOWNLOAD_SIZE, else 4 GiB). */
  maxDownloadBytes?: number;
  /** --allow-host-urls: URLs the Dockerfile names may reach host-only addresses (net/host-only.ts). */
  allowHostUrls?: boolean;
}

export interface VmBuildResult {
  image: StoredImage;
  /** Steps executed (not from the cache) and reused. */
  executed: number;
  cached: number;
  timings: { bootMs: number; stepsMs: number; convertMs: number; totalMs: number };
  /** The step cache keys of every file-system step built (what carries a build to another runner), and the image's own key. */
  stepKeys: string[];
  cacheKey: string;
}

const FS_STEPS = new Set(['RUN', 'COPY', 'ADD', 'WORKDIR']);
/** Starts every step key: bumped whenever what a step makes of the same inputs changes, so older cache entries (local, or carried by the Actions cache) and up-to-date images no longer match. */
export const ENGINE_SEMANTICS = 'vm-engine-semantics-2';
const GUEST_WRITTEN = ['/etc/hostname', '/etc/hosts', '/etc/resolv.conf'];
export const DEFAULT_STEP_TIMEOUT_MS = 30 * 60_000;
export const DEFAULT_CACHE_MAX_BYTES = 20 * 1024 ** 3;
/** What to do about a full disk under the build's work directory. */
const DISK_FULL_HINT = 'free space there, or point TMPDIR at a larger file system (the build works under TMPDIR)';
/** How long the build disk's file system may stay full while a RUN's VM keeps running. */
const FULL_GRACE_MS = 20_000;

/** Preflight of an image copy into the build's work directory: its allocated size must fit. */
async function roomForCopy(src: string, dest: string, what: string): Promise<void> {
  await requireFree(dest, (await diskUsage(src)).allocated, what, DISK_FULL_HINT);
}

function sha(...parts: string[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p).update('\0');
  return h.digest('hex');
}

/** What a step's result depends on besides its parent: the instruction after expansion, never where it is written. */
function stepInputs(step: Step, state: { user: string; workdir: string }, fromKey?: string): string {
  const { file: _f, line: _l, original: _o, ...rest } = step;
  return JSON.stringify({ ...rest, user: state.user, workdir: state.workdir, ...(fromKey ? { fromKey } : {}) });
}

/** Grow an ext4 image file to `bytes` (never shrinks here). */
async function growTo(image: string, bytes: number): Promise<void> {
  const st = await fsp.stat(image);
  if (st.size >= bytes) return;
  await exec('e2fsck', ['-fy', image], { allowFailure: true });
  await fsp.truncate(image, bytes);
  await exec('resize2fs', [image]);
}

interface Saved { path: string; data?: string; mode?: string; uid?: string; gid?: string }

/** The files the init writes into the image (hostname, hosts, resolv.conf): saved before a RUN, put back after, as Docker's bind mounts leave the image untouched. */
async function saveGuestWritten(image: string, scratch: string): Promise<Saved[]> {
  const saved: Saved[] = [];
  // Read in-process into scratch files firebuild names (0600): the image's own names and modes stay in the image.
  const img = await Ext4Image.open(image);
  try {
    for (const [i, p] of GUEST_WRITTEN.entries()) {
      const e = await img.stat(p);
      if (e?.type !== 'file') {
        saved.push({ path: p });
        continue;
      }
      const host = path.join(scratch, `saved-${i}`);
      const fh = await fsp.open(host, 'wx', 0o600);
      try {
        for await (const c of img.readFile(e.ino)) await fh.write(c);
      } finally {
        await fh.close();
      }
      saved.push({ path: p, data: host, mode: e.mode.toString(8).padStart(4, '0'), uid: String(e.uid), gid: String(e.gid) });
    }
  } finally {
    await img.close();
  }
  return saved;
}

async function restoreGuestWritten(image: string, saved: Saved[]): Promise<void> {
  const cmds: WriteCommand[] = [];
  for (const s of saved) {
    // The RUN may have removed the file: only its absence is expected; a failed write of the saved one fails the step.
    cmds.push(mayBeMissing(`rm ${quote(s.path)}`));
    if (s.data) cmds.push(`write ${quote(s.data)} ${quote(s.path)}`, `sif ${quote(s.path)} mode 0100${s.mode!.slice(-3)}`, `sif ${quote(s.path)} uid ${s.uid}`, `sif ${quote(s.path)} gid ${s.gid}`);
  }
  await new Debugfs(image).write(cmds);
}

/** How build VMs boot: the runtime's settings (backend, network, Firecracker, run cache), shared with `firebuild run`. */
export interface BuildVmSettings {
  backend: RunOptions['backend'];
  /** `user` (QEMU's user-mode networking), `cni` (the CNI build network, e.g. machine-builds) or `none`. */
  network: NetworkMode;
  cni?: RunOptions['cni'];
  firecracker?: RunOptions['firecracker'];
  /** The run cache: build VMs show in `firebuild ls` while they run, and `purge` removes what a killed build left. */
  runCache: string;
  lockDir?: string;
}

interface BootContext {
  vm: BuildVmSettings;
  storage: StorageProvider;
  vmlinuxId?: string;
  accel: string;
  memMib: number;
  stepTimeoutMs: number;
  log: Logger;
  tag: string;
  bootMs: number;
}

/**
 * A RUN's argv. Heredocs follow BuildKit: `RUN <<EOF` alone runs the document as the shell's script;
 * `RUN cmd <<EOF` hands the shell the command line with the documents after it, so the shell feeds them.
 */
export function runArgv(step: Step): string[] {
  const command = step.command ?? [];
  if (!step.heredocs?.length || step.form !== 'shell') return command;
  const shell = step.shell ?? ['/bin/sh', '-c'];
  const line = command[command.length - 1] ?? '';
  const only = /^<<-?(["']?)([A-Za-z_][A-Za-z0-9_]*)\1$/.exec(line.trim());
  if (only && step.heredocs.length === 1) return [...shell, step.heredocs[0]!.content];
  return [...shell, [line, ...step.heredocs.map((h) => `${h.content}${h.content.endsWith('\n') ? '' : '\n'}${h.name}`)].join('\n')];
}

/** RUN: boot the image with the step's command; returns once the guest has powered off. */
async function runStep(image: string, step: Step, state: { user: string; workdir: string }, b: BootContext): Promise<void> {
  const where = { file: step.file, line: step.line };
  const label = `RUN at ${path.basename(step.file)}:${step.line}`;
  const scratch = path.join(path.dirname(image), `run-${step.line}`);
  await fsp.mkdir(scratch, { recursive: true });
  const saved = await saveGuestWritten(image, scratch);
  await injectGuest(image);
  const cache = new RunCache(b.vm.runCache);
  const lockDir = b.vm.lockDir ?? DEFAULT_LOCK_DIR;
  const started = Date.now();
  const vm = await runVm({
    from: b.tag, memMib: b.memMib, cpus: Math.max(1, Math.min(2, os.cpus().length)), env: [], envFiles: [], ports: [],
    network: b.vm.network, ...(b.vm.cni ? { cni: b.vm.cni } : {}), ...(b.vm.firecracker ? { firecracker: b.vm.firecracker } : {}),
    backend: b.vm.backend, accel: b.accel, ...(b.vmlinuxId ? { vmlinuxId: b.vmlinuxId } : {}), bootTimeoutMs: b.stepTimeoutMs, lockDir,
    build: {
      rootfs: image, label: `build of ${b.tag} (${label})`,
      config: { hostname: 'buildkitsandbox', env: step.env ?? [], command: runArgv(step), user: state.user, workdir: state.workdir, stopSignal: 'TERM', build: true },
    },
  }, b.storage, cache, b.log.child('vm'));
  b.bootMs += Date.now() - started;
  // Stream the command's output (the console between the init's START and EXIT lines) as it comes.
  let offset = 0;
  let partial = '';
  let running = false;
  const tail: string[] = [];
  let exitCode: number | undefined;
  const pump = async (): Promise<void> => {
    const fh = await fsp.open(vm.serialLog, 'r').catch(() => undefined);
    if (!fh) return;
    try {
      const { size } = await fh.stat();
      if (size <= offset) return;
      const buf = Buffer.alloc(size - offset);
      await fh.read(buf, 0, buf.length, offset);
      offset = size;
      const lines = (partial + buf.toString('utf8')).split(/\r?\n/);
      partial = lines.pop() ?? '';
      for (const l of lines) {
        if (/FIREBUILD-START/.test(l)) {
          running = true;
          continue;
        }
        const m = /FIREBUILD-EXIT code=(\d+)/.exec(l);
        if (m) {
          exitCode = Number(m[1]);
          running = false;
          continue;
        }
        if (running || /^firebuild-init:/.test(l)) {
          b.log.info(`${label}: ${l}`);
          tail.push(l);
          if (tail.length > 20) tail.shift();
        }
      }
    } finally {
      await fh.close();
    }
  };
  const deadline = started + b.stepTimeoutMs;
  let timedOut = false;
  // A full host disk: QEMU reports the failed writes to the guest (werror=report), whose command then
  // fails; should the guest hang on them instead, a disk that stays full ends the step after a grace.
  const full = (): Promise<UserError | undefined> => diskFullError(image, `the build disk of ${label}`, DISK_FULL_HINT, where);
  let fullSince = 0;
  let lastCheck = 0;
  try {
    while (vmmAlive(vmmOf(vm))) {
      await pump();
      if (Date.now() > deadline) {
        timedOut = true;
        break;
      }
      if (Date.now() - lastCheck > 2000) {
        lastCheck = Date.now();
        const err = await full();
        fullSince = err ? fullSince || Date.now() : 0;
        if (err && Date.now() - fullSince > FULL_GRACE_MS) throw err;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    await pump();
    if (partial && running) tail.push(partial);
    const diskFull = await full();
    if (diskFull) throw diskFull;
    if (timedOut) throw new UserError(`${label} did not finish within ${Math.round(b.stepTimeoutMs / 1000)} s: raise --step-timeout or fix the step${tail.length ? `; last output: ${tail.slice(-3).join(' | ')}` : ''}`, where);
    if (exitCode === undefined) throw new UserError(`${label}: the build VM stopped without reporting an exit code (console: ${tail.slice(-3).join(' | ') || 'empty'})`, where);
    if (exitCode !== 0) {
      const full = tail.join('\n');
      const hint = /No space left on device/i.test(full) ? ' (the build disk is full: grow it with --size)' : /Temporary failure in name resolution|Network is unreachable|Could not resolve|Connection refused/i.test(full) ? ' (the network is unreachable inside the build VM)' : '';
      throw new UserError(`${label} failed with exit code ${exitCode}${hint}: ${tail.slice(-5).join(' | ') || 'no output'}`, where);
    }
    // Firecracker's jail holds the disk as a hard link, or as a copy where the jail is on another file system: take the copy back.
    if (vm.jailDir) await takeBackJailed(vm.jailDir, image);
  } finally {
    await teardown(cache, vm, lockDir, b.log);
  }
  await removeGuest(image);
  await restoreGuestWritten(image, saved);
  await fsp.rm(scratch, { recursive: true, force: true });
  await new Ext4Tools(b.log).check(image).catch(async (err: Error) => {
    throw (await diskFullError(image, `the build disk of ${label}`, DISK_FULL_HINT, where)) ?? new UserError(`${label}: the image is not clean after the step (e2fsck: ${err.message.split('\n')[0]})`, where);
  });
}

async function takeBackJailed(jailDir: string, image: string): Promise<void> {
  const jailed = path.join(jailDir, 'root', 'rootfs.ext4');
  const [a, b] = await Promise.all([fsp.stat(jailed).catch(() => undefined), fsp.stat(image)]);
  if (!a) throw new UserError(`the build VM's disk is gone from its jail (${jailed})`);
  if (a.ino !== b.ino || a.dev !== b.dev) await copySparse(jailed, image);
  await fsp.chown(image, 0, 0);
}

/** BuildKit features the vm engine does not do (refused rather than ignored). `COPY --link` changes only how BuildKit caches layers, not the tree: accepted. */
export function vmUnsupported(step: Step): string | undefined {
  if (step.mounts?.length) return 'RUN --mount';
  if (step.network !== undefined) return 'RUN --network';
  if (step.security !== undefined) return 'RUN --security';
  if (step.checksum !== undefined) return 'ADD --checksum';
  const m = /^\s*\w+\s+(?:--\S+\s+)*--(parents|exclude)\b/i.exec(step.original);
  if (m) return `${step.keyword} --${m[1]}`;
  return undefined;
}

/** Resolve a WORKDIR value against the current one. */
function joinWorkdir(current: string, value: string): string {
  return path.posix.resolve(current || '/', value);
}

export async function buildWithVm(o: VmBuildOptions, storage: StorageProvider, log: Logger): Promise<VmBuildResult> {
  return withDownloads(o, (downloads) => buildWithDownloads(o, storage, log, downloads));
}

async function buildWithDownloads(o: VmBuildOptions, storage: StorageProvider, log: Logger, downloads: Downloads): Promise<VmBuildResult> {
  const started = Date.now();
  const tag = formatTag(parseTag(o.tag));
  const src = await resolveSource(o.dockerfile, { ...(o.context ? { context: o.context } : {}), cacheDir: o.cacheDir, logger: log });
  const images = new ImageResolver(storage, log);
  const plan: Plan = await buildPlan(src.text, {
    buildArgs: parseBuildArgs(o.buildArgs),
    ...(o.target !== undefined ? { target: o.target } : {}),
    context: src.context,
    source: { kind: src.kind, ref: src.ref, dockerfile: src.kind === 'literal' ? 'Dockerfile' : src.dockerfile, ...(src.commit ? { commit: src.commit } : {}) },
    baseConfig: async (ref): Promise<Partial<ImageConfig> | undefined> => (await images.resolve(ref))?.config,
    downloads,
  });
  for (const st of plan.stages) {
    for (const step of st.steps) {
      const feature = vmUnsupported(step);
      if (feature) throw new UserError(`${feature} is not supported by the vm engine yet: remove it, or build with --engine docker on a host with BuildKit`, { file: step.file, line: step.line });
    }
  }
  // RUN steps boot the build VMs: their kernel must be there before anything runs (a build without RUN boots nothing).
  if (plan.stages.some((st) => st.steps.some((x) => x.keyword === 'RUN'))) {
    await pickKernel(storage, o.vmlinuxId).catch((err: Error) => {
      throw err instanceof UserError ? new UserError(`the vm engine boots RUN steps in microVMs, and ${err.message}; or build with --engine docker`) : err;
    });
  }
  const cache = new StepCache(o.cacheDir, o.cacheMaxBytes ?? DEFAULT_CACHE_MAX_BYTES, log);
  let executed = 0;
  let cached = 0;
  let stepsMs = 0;
  // Every step's key, before anything runs: an unchanged rebuild of the same tag keeps the stored image.
  const planned = new Map<number, PlannedStage>();
  for (const stage of plan.stages) planned.set(stage.index, await planStage(stage, plan, planned, images));
  const targetStage = plan.stages[plan.stages.length - 1];
  if (!targetStage) throw new UserError('the Dockerfile has no stage to build');
  const stepKeys = plan.stages.flatMap((st) => st.steps.flatMap((x, k) => (FS_STEPS.has(x.keyword) ? [planned.get(st.index)!.keys[k]!] : [])));
  const finalKey = sha('image', planned.get(targetStage.index)!.finalKey, String(o.freeBytes ?? 64 * 1024 ** 2), String(o.sizeBytes ?? ''));
  if (await storage.hasImage(tag)) {
    const existing = await storage.getImage(tag);
    if (!o.noCache && existing.metadata.build?.cacheKey === finalKey) {
      log.info('up to date: every step is unchanged', { tag });
      return { image: existing, executed: 0, cached: plan.stages.reduce((a, s) => a + s.steps.filter((x) => FS_STEPS.has(x.keyword)).length, 0), timings: { bootMs: 0, stepsMs: 0, convertMs: 0, totalMs: Date.now() - started }, stepKeys, cacheKey: finalKey };
    }
    if (!o.overwrite) throw new UserError(`image ${tag} already exists (built from other inputs): choose another tag or pass --overwrite`);
  }
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'firebuild-vmbuild-'));
  const b: BootContext = {
    vm: o.vm ?? { backend: 'qemu', network: 'user', runCache: path.join(o.cacheDir, 'build-vms') },
    storage, ...(o.vmlinuxId ? { vmlinuxId: o.vmlinuxId } : {}), accel: o.accel ?? 'auto', memMib: o.memMib ?? 512,
    stepTimeoutMs: o.stepTimeoutMs ?? DEFAULT_STEP_TIMEOUT_MS, log, tag, bootMs: 0,
  };
  try {
    const results = new Map<number, { image: string; key: string }>();
    const externals = new Map<string, string>();
    let last: { stage: Stage; image: string; key: string; parents: string[] } | undefined;
    for (const stage of plan.stages) {
      const image = path.join(work, `stage-${stage.index}.ext4`);
      const p = planned.get(stage.index)!;
      const { keys, states, parents } = p;
      let start = 0;
      if (!o.noCache) {
        for (let k = stage.steps.length - 1; k >= 0; k--) {
          if (!FS_STEPS.has(stage.steps[k]!.keyword) || !(await cache.has(keys[k]!))) continue;
          if (await cache.restore(keys[k]!, image)) {
            start = k + 1;
            cached += stage.steps.slice(0, k + 1).filter((s) => FS_STEPS.has(s.keyword)).length;
            log.info('steps restored from the cache', { stage: stage.name ?? stage.index, through: `${path.basename(stage.steps[k]!.file)}:${stage.steps[k]!.line}` });
            // A larger --size than the cached build's (a full disk, retried): the restored steps grow too.
            if (o.sizeBytes) await growTo(image, o.sizeBytes);
          }
          break;
        }
      }
      if (start === 0) {
        if (p.base.kind === 'stage') {
          await roomForCopy(results.get(p.base.stage)!.image, image, `the copy of stage ${p.base.stage}`);
          await copySparse(results.get(p.base.stage)!.image, image);
        }
        else if (p.base.kind === 'scratch') await emptyImage(image, path.join(work, `scratch-${stage.index}`), log);
        else await materialize(p.base.image, image, path.join(work, `base-${stage.index}`), log);
        await growTo(image, o.sizeBytes ?? (await fsp.stat(image)).size + 1024 ** 3);
      }
      for (let k = start; k < stage.steps.length; k++) {
        const step = stage.steps[k]!;
        if (!FS_STEPS.has(step.keyword)) continue;
        const st = states[k]!;
        const t0 = Date.now();
        const stepWhere = { file: step.file, line: step.line };
        log.info(`step ${path.basename(step.file)}:${step.line}`, { instruction: step.original.split('\n')[0]!.slice(0, 120) });
        if (step.keyword === 'RUN') {
          await runStep(image, step, st, b);
        } else if (step.keyword === 'WORKDIR') {
          await applyWorkdir(image, st.workdir, userOwner(st.user, await imageAccounts(image), stepWhere), stepWhere);
        } else {
          const accounts = await imageAccounts(image);
          const owner = chownOwner(step.chown, accounts, stepWhere);
          let fromImage: string | undefined;
          if (step.from && 'stage' in step.from) fromImage = results.get(step.from.stage)?.image;
          else if (step.from) fromImage = await external(step.from.image, images, work, externals, log, stepWhere);
          const scratch = path.join(work, `copy-${stage.index}-${k}`);
          await fsp.mkdir(scratch);
          const dest = step.dest!.startsWith('/') ? step.dest! : path.posix.join(st.workdir, step.dest!) + (step.dest!.endsWith('/') ? '/' : '');
          await applyCopy(image, { step, dest, context: src.context, ...(fromImage ? { fromImage } : {}), owner, chowned: step.chown !== undefined && step.chown !== '', scratch, downloads });
          await fsp.rm(scratch, { recursive: true, force: true });
        }
        stepsMs += Date.now() - t0;
        executed++;
        if (!o.noCache) await cache.save(keys[k]!, image);
      }
      results.set(stage.index, { image, key: p.finalKey });
      last = { stage, image, key: p.finalKey, parents };
    }
    if (!last) throw new UserError('the Dockerfile has no stage to build');
    const t1 = Date.now();
    const target = last;
    const stored = await storage.writeImage(tag, async (staging) => {
      await copySparse(target.image, staging.rootfsPath);
      const tools = new Ext4Tools(log);
      await tools.check(staging.rootfsPath);
      await tools.shrink(staging.rootfsPath, { freeBytes: o.freeBytes ?? 64 * 1024 ** 2 });
      await tools.check(staging.rootfsPath);
      return {
        type: 'rootfs',
        source: { kind: 'dockerfile', ref: src.ref, ...(src.commit ? { commit: src.commit } : {}), ...(target.stage.name ? { stage: target.stage.name } : {}) },
        parents: target.parents,
        config: target.stage.config,
        build: { engine: 'vm', planDigest: plan.digest, buildArgs: plan.buildArgs, durationMs: Date.now() - started, cacheKey: finalKey },
      };
    }, { overwrite: o.overwrite ?? false });
    const convertMs = Date.now() - t1;
    log.info('built with the vm engine', { tag, executed, cached, seconds: Math.round((Date.now() - started) / 100) / 10 });
    return { image: stored, executed, cached, timings: { bootMs: b.bootMs, stepsMs, convertMs, totalMs: Date.now() - started }, stepKeys, cacheKey: finalKey };
  } finally {
    await fsp.rm(work, { recursive: true, force: true });
  }
}

/** Where an image's file system comes from: a stored firebuild image, the local Docker engine, or a registry. */
type ImageSource = { kind: 'file'; file: string } | { kind: 'docker'; ref: string; id: string } | { kind: 'registry'; image: RegistryImage };

interface ResolvedImage {
  source: ImageSource;
  /** What the step keys chain from: the content's digest. */
  key: string;
  config: ImageConfig;
  /** The parent recorded in metadata. */
  parent: string;
}

/**
 * Finds an image by reference, once per reference: a stored firebuild image, else the local Docker
 * engine's image (when an engine answers), else, for a reference that names a registry host, the
 * registry's (only its manifest and config are fetched here).
 */
class ImageResolver {
  private readonly seen = new Map<string, Promise<ResolvedImage | undefined>>();
  constructor(private readonly storage: StorageProvider, private readonly log: Logger) {}

  resolve(ref: string): Promise<ResolvedImage | undefined> {
    let r = this.seen.get(ref);
    if (!r) {
      r = this.find(ref);
      this.seen.set(ref, r);
    }
    return r;
  }

  private async find(ref: string): Promise<ResolvedImage | undefined> {
    const img = await findBase(this.storage, ref);
    if (img) return { source: { kind: 'file', file: img.rootfsPath }, key: sha('image', img.metadata.rootfs.sha256), config: img.metadata.config, parent: img.tag };
    const d = await dockerBase(ref, this.log);
    if (d) return { source: { kind: 'docker', ref, id: d.Id }, key: sha('docker', d.Id), config: fromDockerConfig(d.Config as never), parent: ref };
    const reg = await registryBase(ref, this.log);
    if (reg) return { source: { kind: 'registry', image: reg }, key: sha('registry', reg.digest), config: reg.config, parent: `${ref}@${reg.digest}` };
    return undefined;
  }
}

function notFound(ref: string): string {
  return `image ${ref} not found: not a stored firebuild image (firebuild image ls; build one with firebuild baseos or firebuild image pull one), not in the local Docker engine, and not pullable from a registry (name one: registry-host/repository:tag)`;
}

/** An image's file system as an ext4 file at `dest` (stored images are copied; nothing of the image runs). */
async function materialize(src: ImageSource, dest: string, scratch: string, log: Logger): Promise<void> {
  if (src.kind === 'file') {
    await roomForCopy(src.file, dest, `the build's copy of ${src.file}`);
    return copySparse(src.file, dest);
  }
  await fsp.mkdir(scratch);
  try {
    if (src.kind === 'registry') {
      await registryImageToExt4(src.image, scratch, dest, log);
      return;
    }
    // A base only the local Docker engine has: its export, converted.
    const exp = await new DockerEngine(log.child('docker')).exportImage(src.id);
    const [conv, done] = await Promise.allSettled([convertTarStream(exp.stream, { image: dest, what: `the export of ${src.ref}`, freeBytes: 0, log }), exp.done()]);
    if (done.status === 'rejected') throw done.reason;
    if (conv.status === 'rejected') throw conv.reason;
  } finally {
    await fsp.rm(scratch, { recursive: true, force: true });
  }
}

/** `COPY --from=<image>`: the image's file system, read in place when stored, else made once per build in the work directory. */
async function external(ref: string, images: ImageResolver, work: string, made: Map<string, string>, log: Logger, where: { file: string; line: number }): Promise<string> {
  const r = await images.resolve(ref);
  if (!r) throw new UserError(`COPY --from=${ref}: ${notFound(ref)}`, where);
  if (r.source.kind === 'file') return r.source.file;
  let file = made.get(ref);
  if (!file) {
    file = path.join(work, `external-${made.size}.ext4`);
    await materialize(r.source, file, path.join(work, `external-${made.size}`), log);
    made.set(ref, file);
  }
  return file;
}

/** FROM scratch: an empty file system (only lost+found, which no tree comparison counts). */
async function emptyImage(image: string, scratch: string, log: Logger): Promise<void> {
  await fsp.mkdir(scratch);
  try {
    await new Ext4Tools(log).mkfs({ root: scratch, image, sizeBytes: 64 * 1024 ** 2 });
  } finally {
    await fsp.rm(scratch, { recursive: true, force: true });
  }
}

interface PlannedStage {
  base: { kind: 'image'; image: ImageSource } | { kind: 'stage'; stage: number } | { kind: 'scratch' };
  parents: string[];
  keys: string[];
  states: { user: string; workdir: string }[];
  finalKey: string;
}

/** A stage's base and the key of every step (chained from the base's digest or the base stage's final key). */
async function planStage(stage: Stage, plan: Plan, planned: Map<number, PlannedStage>, images: ImageResolver): Promise<PlannedStage> {
  const where = { file: stage.file, line: stage.line };
  let key: string;
  let baseCfg: ImageConfig | undefined;
  let base: PlannedStage['base'];
  const parents: string[] = [];
  if (stage.base.kind === 'stage') {
    const prev = planned.get(stage.base.stage);
    if (!prev) throw new UserError(`stage ${stage.base.stage} was not built before stage ${stage.index}`, where);
    key = prev.finalKey;
    base = { kind: 'stage', stage: stage.base.stage };
    const baseIndex = stage.base.stage;
    baseCfg = plan.stages.find((s) => s.index === baseIndex)?.config;
  } else if (stage.base.kind === 'image') {
    const r = await images.resolve(stage.base.ref);
    if (!r) throw new UserError(`base ${notFound(stage.base.ref)}`, where);
    key = sha(ENGINE_SEMANTICS, r.key);
    base = { kind: 'image', image: r.source };
    baseCfg = r.config;
    parents.push(r.parent);
  } else {
    key = sha(ENGINE_SEMANTICS, 'scratch');
    base = { kind: 'scratch' };
  }
  const state = { user: baseCfg?.user ?? '', workdir: baseCfg?.workingDir || '/' };
  const keys: string[] = [];
  const states: { user: string; workdir: string }[] = [];
  for (const step of stage.steps) {
    if (step.keyword === 'USER') state.user = step.value ?? '';
    if (step.keyword === 'WORKDIR') state.workdir = joinWorkdir(state.workdir, step.value ?? '/');
    let from: string | undefined;
    if (step.from && 'stage' in step.from) from = planned.get(step.from.stage)?.finalKey;
    else if (step.from) {
      const ext = await images.resolve(step.from.image);
      if (!ext) throw new UserError(`COPY --from=${step.from.image}: ${notFound(step.from.image)}`, { file: step.file, line: step.line });
      from = ext.key;
    }
    key = sha(key, stepInputs(step, state, from));
    keys.push(key);
    states.push({ ...state });
  }
  return { base, parents, keys, states, finalKey: key };
}
/** An image in an OCI registry, for references that name a registry host (nothing is downloaded but its manifest and config). */
async function registryBase(ref: string, log: Logger): Promise<RegistryImage | undefined> {
  let parsed = true;
  try {
    parseRef(ref);
  } catch {
    parsed = false;
  }
  if (!parsed) return undefined;
  try {
    return await resolveRegistryImage(ref);
  } catch (err) {
    log.debug('registry base unavailable', { ref, reason: (err as Error).message });
    return undefined;
  }
}

/** The local Docker engine's image, when an engine answers and has it (nothing is pulled: the registry path is for OCI clients). */
async function dockerBase(ref: string, log: Logger): Promise<Docker.ImageInspectInfo | undefined> {
  try {
    const engine = new DockerEngine(log.child('docker'));
    await engine.ensureReachable();
    return await engine.imageInspect(ref);
  } catch {
    return undefined;
  }
}

async function findBase(storage: StorageProvider, ref: string): Promise<StoredImage | undefined> {
  try {
    const t = formatTag(parseTag(ref));
    return (await storage.hasImage(t)) ? await storage.getImage(t) : undefined;
  } catch {
    return undefined;
  }
}
