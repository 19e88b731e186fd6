import type { Command } from 'commander';
import { OPTIONAL_PARTS } from '../../commands/doctor-parts.js';
import { UserError } from '../../util/errors.js';
import { json, table } from '../format.js';
import { collect, withProfileOptions, type CliContext, type SettingsCliOpts } from '../options.js';

/** doctor. */
export function register(program: Command, ctx: CliContext): void {
  const { out } = ctx;
  withProfileOptions(
    program
      .command('doctor')
      .description('check every part a build or run needs; exit 2 when a required part is missing')
      .option('--require <part>', `treat an optional part as required, repeatable (${OPTIONAL_PARTS.join(', ')})`, collect)
      .option('--json', 'print JSON'),
    ctx.env,
    { runtime: true },
  ).action(async (o: SettingsCliOpts & { require?: string[]; json?: boolean }) => {
    const { settings, storage } = await ctx.load(o);
    const { doctor, missingRequired } = await import('../../commands/doctor.js');
    const results = await doctor({ settings, storage, profileConfDir: o.profileConfDir, require: o.require ?? [] });
    if (o.json) out(json(results));
    else out(table(['PART', 'STATUS', 'REQUIRED', 'DETAIL', 'FIX'], results.map((r) => [r.part, r.status, r.required ? 'yes' : 'no', r.detail, r.fix ?? ''])));
    const missing = missingRequired(results);
    if (missing.length > 0) {
      throw new UserError(`required parts missing: ${missing.map((m) => m.part).join(', ')}: ${missing[0]?.fix ?? 'see the table above'}`);
    }
  });
}
