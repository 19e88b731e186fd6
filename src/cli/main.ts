import { CommanderError } from 'commander';
import { EXIT_USER, exitCodeFor, formatError } from '../util/errors.js';
import { FIREBUILD_VERSION, buildProgram, type CliIO } from './program.js';

/** Run the CLI; returns the exit code. Never calls process.exit, so tests can call it directly. */
export async function main(argv: string[], io: CliIO = { stdout: process.stdout, stderr: process.stderr, env: process.env }): Promise<number> {
  if (argv.length === 1 && (argv[0] === '--version' || argv[0] === '-V')) {
    io.stdout.write(`${FIREBUILD_VERSION}\n`);
    return 0;
  }
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
