import { describe, expect, test } from '@jest/globals';
import { EXIT_INTERNAL, EXIT_USER, InternalError, UserError, causeChain, exitCodeFor, formatError } from '../../src/util/errors.js';

describe('error taxonomy', () => {
  test('user errors are one line and exit 2', () => {
    const e = new UserError('tag is malformed:\n  use org/name:version');
    expect(exitCodeFor(e)).toBe(EXIT_USER);
    expect(formatError(e)).toBe('error: tag is malformed: use org/name:version');
    expect(formatError(e).includes('\n')).toBe(false);
  });

  test('user errors can point at a file and line', () => {
    expect(formatError(new UserError('unknown instruction FOO', { file: 'Dockerfile', line: 3 }))).toBe('error: Dockerfile:3: unknown instruction FOO');
  });

  test('internal errors exit 1 and print the cause chain', () => {
    const root = Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
    const e = new InternalError('cannot write image', { cause: new InternalError('cannot write rootfs.ext4', { cause: root }) });
    expect(exitCodeFor(e)).toBe(EXIT_INTERNAL);
    expect(exitCodeFor(new Error('x'))).toBe(EXIT_INTERNAL);
    expect(causeChain(e)).toEqual(['cannot write image', 'cannot write rootfs.ext4', 'ENOSPC: no space left on device']);
    expect(formatError(e).split('\n')).toEqual([
      'internal error: cannot write image',
      '  caused by: cannot write rootfs.ext4',
      '  caused by: ENOSPC: no space left on device',
    ]);
  });

  test('non-Error throwables are reported too', () => {
    expect(formatError('boom')).toBe('internal error: boom');
  });
});
