import { describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { REPO } from '../helpers/cli.js';

/**
 * dist/ is checked in (the runner executes it as is): rebuilding it from the sources must change
 * nothing. `git status --porcelain`, not `git diff`, so new files count too.
 */
describe('dist/', () => {
  test('is what scripts/bundle-actions.sh builds from the current sources', () => {
    execFileSync('bash', ['scripts/bundle-actions.sh'], { cwd: REPO, stdio: 'ignore' });
    expect(execFileSync('git', ['status', '--porcelain', 'dist/'], { cwd: REPO, encoding: 'utf8' })).toBe('');
  }, 15 * 60_000);
});
