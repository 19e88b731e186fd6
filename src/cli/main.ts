import { readFileSync } from 'node:fs';
import { EXIT_USER, exitCodeFor, formatError } from '../util/errors.js';
import type { CliIO } from './program.js';

/** The package version, read from package.json two levels above (src/cli or lib/cli). */
export const FIREBUILD_VERSION: string = (() => {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
})();

/** Run the CLI; returns the exit code. Never calls process.exit, so tests can call it directly. */
export async function main(argv: string[], io: CliIO = { stdout: process.stdout, stderr: process.stderr, env: process.env }): Promise<number> {
  if (argv.length === 1 && (argv[0] === '--version' || argv[0] === '-V')) {
    io.stdout.write(`${FIREBUILD_VERSION}\n`);
    return 0;
  }
  // commander and the command definitions load only past --version; each command's implementation only
  // in its action (program.ts, bench/cli-start.mjs).
  const { CommanderError, buildProgram } = await import('./program.js');
  const program = buildProgram(io);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander already printed its one-line message (or the help/version text).
      return err.exitCode === 0 || err.code === 'commander.helpDisplayed' || err.code === 'commander.version' ? 0 : EXIT_USER;
    }
    io.stderr.write(formatError(err) + '\n');
    // A guest command's own exit code passes through `firebuild run` in the foreground.
    const guest = (err as { exitCode?: unknown }).exitCode;
    return typeof guest === 'number' ? guest : exitCodeFor(err);
  }
}
