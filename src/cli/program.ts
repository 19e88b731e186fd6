import type { Command } from 'commander';
// Only what the command definitions need is imported here and in ./options.js and ./commands/*.js, as every
// command and --help load them: each command's implementation (dockerode, @actions/*, the ext4 writer, OCI,
// zod schemas, proper-lockfile...) is imported by its own action when it runs. Keep new static imports
// type-only, or of modules with no dependency beyond node: (bench/cli-start.mjs measures the start-up).
import type { Settings } from '../profile/settings.js';
import type { StorageProvider } from '../store/provider.js';
import { JsonLogger, LOG_LEVELS, TerminalLogger, isLogLevel, type Logger } from '../util/logger.js';
import { register as registerBuild } from './commands/build.js';
import { register as registerCache } from './commands/cache.js';
import { register as registerDiscover } from './commands/discover.js';
import { register as registerDoctor } from './commands/doctor.js';
import { register as registerImage } from './commands/image.js';
import { register as registerKernel } from './commands/kernel.js';
import { register as registerProfile } from './commands/profile.js';
import { register as registerVm } from './commands/vm.js';
import { commander, Option, settingsFlags, type CliContext, type CliIO, type SettingsCliOpts } from './options.js';

export type { CliIO } from './options.js';
export const { CommanderError } = commander;

export function buildProgram(io: CliIO): Command {
  const program = new commander.Command('firebuild');
  let logger: Logger = new TerminalLogger(io.stderr);

  program
    .description('Build Firecracker/QEMU microVM root file systems from Dockerfiles and Docker images, and boot them.')
    // `firebuild --version` is answered by main(): a root --version option would also swallow
    // `kernel build --version 6.1`, since commander reads root options after the subcommand too.
    .addHelpText('after', '\nfirebuild --version prints the version.')
    .addOption(new Option('--log-level <level>', 'log level').choices(LOG_LEVELS as unknown as string[]).default('info').env('FIREBUILD_LOG_LEVEL'))
    .option('--log-as-json', 'log one JSON object a line (@level, @message, @module, @timestamp, fields)')
    .showSuggestionAfterError(true)
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) })
    .exitOverride()
    .hook('preAction', (_root, action) => {
      const g = action.optsWithGlobals() as { logLevel: string; logAsJson?: boolean };
      const level = isLogLevel(g.logLevel) ? g.logLevel : 'info';
      logger = g.logAsJson ? new JsonLogger(io.stderr, level) : new TerminalLogger(io.stderr, level);
    });

  const ctx: CliContext = {
    env: io.env,
    out: (s: string): void => void io.stdout.write(s),
    get logger(): Logger {
      return logger;
    },
    load: async (o: SettingsCliOpts): Promise<{ settings: Settings; storage: StorageProvider }> => {
      const { loadSettings, openStorage } = await import('../profile/settings.js');
      const settings = await loadSettings({ ...(o.profile ? { profile: o.profile } : {}), profileConfDir: o.profileConfDir, flags: settingsFlags(o) });
      return { settings, storage: openStorage(settings) };
    },
  };

  // The order of registration is the order of `--help` and of README's generated reference.
  registerProfile(program, ctx);
  registerImage(program, ctx);
  registerKernel(program, ctx);
  registerBuild(program, ctx);
  registerDiscover(program, ctx);
  registerCache(program, ctx);
  registerVm(program, ctx);
  registerDoctor(program, ctx);
  return program;
}
