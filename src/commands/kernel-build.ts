import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { tarExtract } from '../rootfs/gnu-tar.js';
import type { StorageProvider, StoredKernel } from '../store/provider.js';
import { UserError } from '../util/errors.js';
import { exec, spawnStream } from '../util/exec.js';
import { exists } from '../util/fs.js';
import { withLock } from '../util/lock.js';
import type { Logger } from '../util/logger.js';

/**
 * `firebuild kernel build`: firebuild's fast guest kernel, an uncompressed vmlinux from Linux sources —
 * `make allnoconfig` with firebuild's fragment (baseos/kernel/firebuild.config) and any extra fragments,
 * so only what a microVM guest needs is built (a few minutes on 2 cores; about 1 s to init under TCG).
 * Built out of tree (the source is never written) under the cache directory, keyed by the source and the
 * fragments, so a rebuild of the same inputs only re-runs make's up-to-date check.
 */
export const FRAGMENT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'baseos', 'kernel', 'firebuild.config');

export interface KernelBuildOptions {
  id: string;
  /** A Linux source tree. */
  source?: string;
  /** A Debian linux-source-<version> package's tarball (/usr/src/linux-source-<version>.tar.xz). */
  version?: string;
  cacheDir: string;
  jobs?: number;
  overwrite?: boolean;
  /** Extra fragments merged after firebuild's own (later lines win). */
  fragments?: string[];
}

/** `CONFIG_X=y` lines and `# CONFIG_X is not set` lines of a fragment, as a map. */
export function parseConfigFragment(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of text.split('\n')) {
    const set = /^(CONFIG_[A-Za-z0-9_]+)=(.*)$/.exec(line.trim());
    const unset = /^# (CONFIG_[A-Za-z0-9_]+) is not set$/.exec(line.trim());
    if (set) m.set(set[1]!, set[2]!);
    else if (unset) m.set(unset[1]!, 'n');
  }
  return m;
}

/** Options the fragment sets to y that the final .config lost (an unmet dependency): each is an error. */
export function lostOptions(fragment: Map<string, string>, finalConfig: string): string[] {
  const final = parseConfigFragment(finalConfig);
  return [...fragment].filter(([k, v]) => v === 'y' && final.get(k) !== 'y').map(([k]) => k);
}

async function sourceTree(o: KernelBuildOptions, log: Logger): Promise<{ dir: string; identity: string }> {
  if (o.source && o.version) throw new UserError('give --source DIR or --version V, not both');
  if (o.source) {
    const dir = path.resolve(o.source);
    if (!(await exists(path.join(dir, 'Makefile'))) || !(await exists(path.join(dir, 'arch', 'x86')))) {
      throw new UserError(`${dir} is not a Linux source tree (no Makefile or arch/x86): give the top of the tree to --source`);
    }
    const version = (await exec('make', ['-s', '-C', dir, 'kernelversion'], { allowFailure: true })).stdout.trim();
    return { dir, identity: `dir:${dir}:${version}` };
  }
  const version = o.version ?? '6.1';
  if (!/^\d+\.\d+$/.test(version)) throw new UserError(`malformed --version '${version}': give a kernel series such as 6.1`);
  const tarball = `/usr/src/linux-source-${version}.tar.xz`;
  if (!(await exists(tarball))) throw new UserError(`${tarball} not found: install Debian's linux-source-${version} package, or give --source DIR`);
  const st = await fsp.stat(tarball);
  const identity = `deb:${tarball}:${st.size}:${st.mtimeMs}`;
  const dir = path.join(o.cacheDir, 'kernel-src', `linux-source-${version}-${createHash('sha256').update(identity).digest('hex').slice(0, 12)}`);
  const done = path.join(dir, '.firebuild-extracted');
  if (!(await exists(done))) {
    log.info('extracting the kernel source', { tarball });
    const staging = `${dir}.tmp-${process.pid}`;
    await fsp.rm(staging, { recursive: true, force: true });
    await fsp.mkdir(staging, { recursive: true });
    await tarExtract(tarball, { dir: staging, compression: 'xz', stripComponents: 1 });
    await fsp.writeFile(path.join(staging, '.firebuild-extracted'), identity + '\n');
    await fsp.rm(dir, { recursive: true, force: true });
    await fsp.rename(staging, dir);
  }
  return { dir, identity };
}

async function make(src: string, out: string, args: string[], log: Logger): Promise<void> {
  let tail: string[] = [];
  let n = 0;
  const onLine = (l: string): void => {
    tail = [...tail.slice(-19), l];
    n++;
    if (n % 500 === 0) log.info('building the kernel', { lines: n, last: l.trim() });
    else log.debug(l);
  };
  const child = spawnStream('make', ['-C', src, `O=${out}`, ...args], {
    onStderrLine: onLine,
    notFound: 'install build-essential, bison, flex, bc, libelf-dev and libssl-dev',
  });
  for await (const l of createInterface({ input: child.stdout, crlfDelay: Infinity })) onLine(l);
  const { code, signal } = await child.exit;
  if (code === 0) return;
  const err = tail.filter((l) => /error|Error/.test(l)).slice(-3);
  throw new UserError(`the kernel build failed (make ${args.join(' ')}, exit ${signal ?? code}): ${(err.length ? err : tail.slice(-3)).join(' | ')}`);
}

export async function kernelBuild(storage: StorageProvider, o: KernelBuildOptions, log: Logger): Promise<StoredKernel> {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(o.id)) throw new UserError(`invalid --id '${o.id}': use letters, digits, '.', '_' and '-'`);
  if (!o.overwrite && (await storage.listKernels()).some((k) => k.id === o.id)) throw new UserError(`kernel ${o.id} already exists: choose another --id or pass --overwrite`);
  const fragmentFiles = [FRAGMENT, ...(o.fragments ?? []).map((f) => path.resolve(f))];
  const fragmentText = (await Promise.all(fragmentFiles.map(async (f) => {
    const text = await fsp.readFile(f, 'utf8').catch((err: NodeJS.ErrnoException) => {
      throw new UserError(`cannot read the kernel config fragment ${f}: ${err.code ?? err.message}`);
    });
    return `# ${path.basename(f)}\n${text.endsWith('\n') ? text : text + '\n'}`;
  }))).join('');
  const { dir: src, identity } = await sourceTree(o, log);
  const key = createHash('sha256').update(identity).update('\0').update(fragmentText).digest('hex').slice(0, 16);
  const out = path.join(o.cacheDir, 'kernel-build', key);
  const jobs = o.jobs ?? os.cpus().length;
  return withLock(path.join(o.cacheDir, 'kernel-build', `${key}.build`), async () => {
    await fsp.mkdir(out, { recursive: true });
    const started = Date.now();
    if (!(await exists(path.join(out, '.config')))) {
      log.info('configuring the kernel', { source: src, fragments: fragmentFiles });
      // allnoconfig with the fragment as KCONFIG_ALLCONFIG: what the fragment names is set, all else is off.
      const merged = path.join(out, 'firebuild.fragment');
      await fsp.writeFile(merged, fragmentText);
      await make(src, out, ['allnoconfig', `KCONFIG_ALLCONFIG=${merged}`], log);
      const lost = lostOptions(parseConfigFragment(fragmentText), await fsp.readFile(path.join(out, '.config'), 'utf8'));
      if (lost.length) {
        await fsp.rm(path.join(out, '.config'), { force: true });
        throw new UserError(`the kernel configuration cannot enable ${lost.join(', ')} (unmet dependencies in this source): fix the fragment (${fragmentFiles.join(', ')})`);
      }
    }
    log.info('building vmlinux', { jobs, out });
    await make(src, out, [`-j${jobs}`, 'vmlinux'], log);
    const k = await storage.importKernel(o.id, path.join(out, 'vmlinux'), { overwrite: o.overwrite ?? false, source: `kernel build ${identity} fragment ${createHash('sha256').update(fragmentText).digest('hex').slice(0, 12)}` });
    log.info('kernel built', { id: k.id, seconds: Math.round((Date.now() - started) / 1000), size: k.metadata.vmlinux.size });
    return k;
  }, { staleMs: 60_000, waitMs: 60 * 60_000 });
}
