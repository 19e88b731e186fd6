import { describe, expect, test } from '@jest/globals';
import { JsonLogger, MemoryLogger, TerminalLogger } from '../../src/util/logger.js';

function sink(isTTY = false): { write: (s: string) => void; isTTY: boolean; text: () => string } {
  let buf = '';
  return { write: (s: string) => void (buf += s), isTTY, text: () => buf };
}

describe('JsonLogger', () => {
  test('writes one JSON object a line with @level, @message, @module, @timestamp and fields', () => {
    const s = sink();
    const log = new JsonLogger(s, 'debug').child('store');
    log.info('image written', { tag: 'acme/web:1', bytes: 42 });
    log.debug('detail');
    const lines = s.text().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({ '@level': 'info', '@message': 'image written', '@module': 'store', tag: 'acme/web:1', bytes: 42 });
    expect(new Date(lines[0]?.['@timestamp'] as string).toISOString()).toBe(lines[0]?.['@timestamp']);
    expect(lines[1]).toMatchObject({ '@level': 'debug', '@message': 'detail' });
  });

  test('fields cannot overwrite the reserved keys', () => {
    const s = sink();
    new JsonLogger(s).warn('x', { '@level': 'error', '@message': 'y' });
    expect(JSON.parse(s.text())).toMatchObject({ '@level': 'warn', '@message': 'x' });
  });

  test('drops entries below its level', () => {
    const s = sink();
    const log = new JsonLogger(s, 'warn');
    log.info('hidden');
    log.debug('hidden');
    log.error('shown');
    expect(s.text().trim().split('\n')).toHaveLength(1);
  });
});

describe('TerminalLogger', () => {
  test('human lines on the sink with module and fields', () => {
    const s = sink();
    const log = new TerminalLogger(s, 'info');
    log.child('doctor').info('checking', { part: 'qemu' });
    log.warn('careful', { why: 'two words' });
    expect(s.text()).toBe('[doctor] checking part=qemu\nWARN [firebuild] careful why="two words"\n');
  });

  test('progress rewrites one line on a terminal and ends with the duration', () => {
    const s = sink(true);
    const p = new TerminalLogger(s, 'info').progress('writing rootfs');
    p.update(50, 100);
    p.done('rootfs written');
    expect(s.text()).toContain('writing rootfs... 50%');
    expect(s.text()).toMatch(/rootfs written \(\d+ ms\)\n$/);
  });

  test('progress off a terminal logs start and end lines only', () => {
    const s = sink(false);
    const p = new TerminalLogger(s, 'info').progress('converting');
    p.update(1, 2);
    p.done();
    expect(s.text().trim().split('\n')).toEqual(['[firebuild] converting...', expect.stringMatching(/^\[firebuild\] converting: done durationMs=\d+$/)]);
  });
});

test('MemoryLogger collects entries across children', () => {
  const log = new MemoryLogger();
  log.child('a').info('one');
  log.error('two', { k: 1 });
  expect(log.entries).toEqual([
    { level: 'info', module: 'a', message: 'one' },
    { level: 'error', module: 'firebuild', message: 'two', fields: { k: 1 } },
  ]);
});
