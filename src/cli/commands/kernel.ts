import * as path from 'node:path';
import type { Command } from 'commander';
import { defaultCacheDir } from '../../profile/paths.js';
import { humanBytes, json, table } from '../format.js';
import { intFlag, withProfileOptions, type CliContext, type SettingsCliOpts } from '../options.js';

/** kernel import, build, ls, rm. */
export function register(program: Command, ctx: CliContext): void {
  const { out } = ctx;
  const kernel = program.command('kernel').description('manage guest kernels');
  withProfileOptions(
    kernel
      .command('import')
      .description('store a kernel (ELF vmlinux, or bzImage with --initrd for QEMU)')
      .argument('<file>', 'kernel image file')
      .requiredOption('--id <id>', 'kernel id, used by --vmlinux-id')
      .option('--initrd <file>', 'initrd to boot with (distribution kernels whose virtio drivers are modules)')
      .option('--cmdline <args>', 'extra kernel command line for this kernel')
      .option('--overwrite', 'replace a kernel with the same id'),
    ctx.env,
    { storage: true },
  ).action(async (file: string, o: SettingsCliOpts & { id: string; initrd?: string; cmdline?: string; overwrite?: boolean }) => {
    const { storage } = await ctx.load(o);
    const { kernelImport } = await import('../../commands/kernel.js');
    const k = await kernelImport(storage, { id: o.id, vmlinux: file, ...(o.initrd ? { initrd: o.initrd } : {}), ...(o.cmdline ? { cmdline: o.cmdline } : {}), overwrite: o.overwrite ?? false }, ctx.logger.child('kernel'));
    out(`${k.id}\n`);
  });
  withProfileOptions(
    kernel
      .command('build')
      .description("build firebuild's fast guest kernel (allnoconfig + baseos/kernel/firebuild.config) and store it")
      .option('--id <id>', 'kernel id, used by --vmlinux-id; the kernel `default` is booted when no --vmlinux-id is given', 'default')
      .option('--fragment <file...>', 'extra kernel config fragments merged over firebuild\'s (repeatable)')
      .option('--source <dir>', 'a Linux source tree (built out of tree; never written)')
      .option('--version <series>', "Debian's linux-source-<series> package (default 6.1 when no --source)")
      .option('--jobs <n>', 'parallel make jobs (default: the number of CPUs)')
      .option('--cache-dir <dir>', 'where sources are extracted and builds kept (default: the firebuild cache)')
      .option('--overwrite', 'replace a kernel with the same id'),
    ctx.env,
    { storage: true },
  ).action(async (o: SettingsCliOpts & { id: string; source?: string; version?: string; jobs?: string; cacheDir?: string; overwrite?: boolean; fragment?: string[] }) => {
    const { storage } = await ctx.load(o);
    const { kernelBuild } = await import('../../commands/kernel-build.js');
    const k = await kernelBuild(storage, {
      id: o.id, ...(o.source ? { source: o.source } : {}), ...(o.version ? { version: o.version } : {}), ...(o.fragment ? { fragments: o.fragment } : {}),
      ...(o.jobs ? { jobs: intFlag(o.jobs, '--jobs') } : {}), cacheDir: path.resolve(o.cacheDir ?? defaultCacheDir(ctx.env)), overwrite: o.overwrite ?? false,
    }, ctx.logger.child('kernel'));
    out(`${k.id}\n`);
  });
  withProfileOptions(kernel.command('ls').description('list stored kernels').option('--json', 'print JSON'), ctx.env, { storage: true })
    .action(async (o: SettingsCliOpts & { json?: boolean }) => {
      const { storage } = await ctx.load(o);
      const { kernelList } = await import('../../commands/kernel.js');
      const list = await kernelList(storage, ctx.logger.child('kernel'));
      if (o.json) return out(json(list.map((k) => ({ id: k.id, path: k.dir, ...(k.metadata ? { metadata: k.metadata } : {}), ...(k.error ? { error: k.error } : {}) }))));
      out(table(
        ['ID', 'FORMAT', 'SIZE', 'INITRD', 'CREATED'],
        list.map((k) => k.metadata
          ? [k.id, k.metadata.format, humanBytes(k.metadata.vmlinux.size), k.metadata.initrd ? humanBytes(k.metadata.initrd.size) : '-', k.metadata.created]
          : [k.id, 'CORRUPT', '', '', k.error ?? '']),
      ));
    });
  withProfileOptions(kernel.command('rm').description('remove a stored kernel').argument('<id>', 'kernel id'), ctx.env, { storage: true })
    .action(async (id: string, o: SettingsCliOpts) => {
      const { storage } = await ctx.load(o);
      const { kernelRemove } = await import('../../commands/kernel.js');
      await kernelRemove(storage, id, ctx.logger.child('kernel'));
    });
}
