import type { Command } from 'commander';
import { json } from '../format.js';
import type { CliContext } from '../options.js';

/** discover. */
export function register(program: Command, ctx: CliContext): void {
  const { out } = ctx;
  program
    .command('discover')
    .description("list the repository's images (firebuild.yml, else every Dockerfile) a change affects, as a GitHub Actions strategy.matrix include list")
    .argument('[dir]', 'the repository directory', '.')
    .option('--manifest <file>', 'the manifest, relative to the repository (default: firebuild.yml at its root when it exists; without one, every Dockerfile, Dockerfile.* and *.Dockerfile)')
    .option('--base <ref>', 'changed files are git diff BASE...HEAD')
    .option('--head <ref>', 'the head of the change (default: HEAD; needs --base)')
    .option('--changed-files <file>', 'a file of changed paths relative to the repository, one a line (instead of --base/--head)')
    .option('--all', 'every image is affected (also without --base and --changed-files)')
    .option('--json', 'print JSON (the default and only format)')
    .option('--output <file>', 'also write the JSON to this file')
    .action(async (dir: string, o: { manifest?: string; base?: string; head?: string; changedFiles?: string; all?: boolean; output?: string }) => {
      const { discover } = await import('../../commands/discover.js');
      const result = await discover({
        dir,
        ...(o.manifest !== undefined ? { manifest: o.manifest } : {}),
        ...(o.base !== undefined ? { base: o.base } : {}),
        ...(o.head !== undefined ? { head: o.head } : {}),
        ...(o.changedFiles !== undefined ? { changedFiles: o.changedFiles } : {}),
        all: o.all ?? false,
      }, ctx.logger.child('discover'));
      const text = json(result);
      if (o.output !== undefined) {
        const { writeFileAtomic } = await import('../../util/fs.js');
        await writeFileAtomic(o.output, text);
      }
      out(text);
    });
}
