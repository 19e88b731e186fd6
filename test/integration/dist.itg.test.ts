import { describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { REPO } from '../helpers/cli.js';
import { annotations, runAction, runPost } from '../helpers/runner.js';

/**
 * dist/ is checked in (the runner executes it as is): rebuilding it from the sources must change
 * nothing. `git status --porcelain`, not `git diff`, so new files count too. Then every step's stub runs
 * as the runner runs it, through the shared core (dist/core) and the chunks its action loads: inputs
 * that fail in the action's first line (one annotation, exit 1), post steps with no saved state (exit 0).
 */
describe('dist/', () => {
  test('is what scripts/bundle-actions.sh builds from the current sources', () => {
    execFileSync('bash', ['scripts/bundle-actions.sh'], { cwd: REPO, stdio: 'ignore' });
    expect(execFileSync('git', ['status', '--porcelain', 'dist/'], { cwd: REPO, encoding: 'utf8' })).toBe('');
  }, 15 * 60_000);

  test.each([
    ['setup/index.js', { backend: 'nope' }, "::error::input 'backend' is 'nope': use one of auto, qemu, firecracker"],
    ['build-rootfs/index.js', {}, "::error::input 'tag' (or 'tags') is required: set it under with: in the workflow"],
    ['build-baseos/index.js', {}, "::error::input 'dockerfile' is required: set it under with: in the workflow"],
    ['smoke-test/index.js', {}, "::error::input 'tag' is required: set it under with: in the workflow"],
    ['publish/index.js', {}, "::error::input 'tag' is required: set it under with: in the workflow"],
    ['discover/index.js', { all: 'maybe' }, "::error::input 'all' is 'maybe': use true or false"],
  ])('%s loads its action from the shared core: a bad input is one annotation', async (entry, inputs, error) => {
    const r = await runAction(entry, inputs);
    expect(annotations(r.stdout)).toEqual([error]);
    expect(r.code).toBe(1);
  });

  test.each(['setup/post/index.js', 'smoke-test/post/index.js'])('%s loads its post step from the shared core: no state, nothing to do', async (entry) => {
    const r = await runPost(entry, {});
    expect(annotations(r.stdout)).toEqual([]);
    expect(annotations(r.stdout, 'warning')).toEqual([]);
    expect(r.code).toBe(0);
  });
});
