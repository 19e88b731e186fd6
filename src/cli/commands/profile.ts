import type { Command } from 'commander';
import { defaultProfileConfDir } from '../../profile/paths.js';
import { json } from '../format.js';
import { settingsFlags, withRegistryMirrorOption, withSettingsOptions, type CliContext, type SettingsCliOpts } from '../options.js';

/** profile-create, profile-ls, profile-inspect. */
export function register(program: Command, ctx: CliContext): void {
  const { out } = ctx;
  withRegistryMirrorOption(withSettingsOptions(
    program
      .command('profile-create')
      .description('create a profile: per-host settings other commands take with --profile')
      .requiredOption('--profile <name>', 'name of the profile to create')
      .option('--profile-conf-dir <dir>', "directory holding profiles (a non-root user's default: ~/.config/firebuild/profiles)", defaultProfileConfDir(ctx.env))
      .option('--overwrite', 'replace an existing profile'),
  )).action(async (o: SettingsCliOpts & { profile: string; overwrite?: boolean }) => {
    const { profileCreate } = await import('../../commands/profile.js');
    const r = await profileCreate({ name: o.profile, profileConfDir: o.profileConfDir, flags: settingsFlags(o), overwrite: o.overwrite ?? false }, ctx.logger.child('profile'));
    out(`${r.file}\n`);
  });

  program
    .command('profile-ls')
    .description('list profiles')
    .option('--profile-conf-dir <dir>', "directory holding profiles (a non-root user's default: ~/.config/firebuild/profiles)", defaultProfileConfDir(ctx.env))
    .option('--json', 'print JSON')
    .action(async (o: { profileConfDir: string; json?: boolean }) => {
      const { profileList } = await import('../../commands/profile.js');
      const names = await profileList(o.profileConfDir);
      out(o.json ? json(names) : names.map((n) => `${n}\n`).join(''));
    });

  program
    .command('profile-inspect')
    .description('print a profile as JSON')
    .requiredOption('--profile <name>', 'profile name')
    .option('--profile-conf-dir <dir>', "directory holding profiles (a non-root user's default: ~/.config/firebuild/profiles)", defaultProfileConfDir(ctx.env))
    .action(async (o: { profile: string; profileConfDir: string }) => {
      const { profileInspect } = await import('../../commands/profile.js');
      out(json(await profileInspect(o.profile, o.profileConfDir)));
    });
}
