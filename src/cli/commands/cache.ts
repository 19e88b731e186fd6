import type { Command } from 'commander';
import { defaultCacheDir } from '../../profile/paths.js';
import { humanBytes, json, table } from '../format.js';
import type { CliContext } from '../options.js';

/** cache ls, prune: the vm engine's RUN --mount=type=cache volumes (never part of an image). */
export function register(program: Command, ctx: CliContext): void {
  const { out } = ctx;
  const cache = program.command('cache').description("the vm engine's RUN --mount=type=cache volumes, shared by every build on this host");
  cache.command('ls').description('list the cache mount volumes (id, space used, last use, whether a build holds one now)').option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const { cacheMountsList } = await import('../../commands/cache.js');
      const rows = await cacheMountsList(defaultCacheDir(ctx.env));
      if (o.json) return out(json(rows));
      out(table(['ID', 'USED', 'LAST USED', 'IN USE'], rows.map((r) => [r.id, humanBytes(r.bytes), r.lastUsed, r.inUse ? 'yes' : 'no'])));
    });
  cache.command('prune').description('remove cache mount volumes (every one, or those named by --id); one a running build holds is kept')
    .option('--id <id...>', 'only these cache ids')
    .action(async (o: { id?: string[] }) => {
      const { cacheMountsPrune } = await import('../../commands/cache.js');
      const r = await cacheMountsPrune(defaultCacheDir(ctx.env), o.id, ctx.logger.child('cache'));
      out(r.removed.map((id) => `${id}\n`).join(''));
    });
}
