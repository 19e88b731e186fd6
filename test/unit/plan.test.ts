import { describe, expect, test } from '@jest/globals';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { LocalContext, type BuildContext } from '../../src/source/context.js';
import { buildPlan, hostPlatform, parseDuration } from '../../src/dockerfile/plan.js';
import type { Plan, Resource } from '../../src/dockerfile/plan-schema.js';
import { UserError } from '../../src/util/errors.js';
import { serveDir } from '../helpers/servers.js';

/** A context that has every file: the plan's semantics without a file system. */
const anyContext: BuildContext = {
  kind: 'local',
  root: '/ctx',
  ignored: () => false,
  resolve: async (source): Promise<Resource[]> => [{ source, kind: 'file', path: source.replace(/^\/+/, ''), sha256: createHash('sha256').update(source).digest('hex'), size: 1, mode: 0o644 }],
};

function plan(text: string, o: { buildArgs?: Record<string, string>; target?: string; platform?: string } = {}): Promise<Plan> {
  return buildPlan(text, { ...o, context: anyContext, source: { kind: 'literal', ref: '<literal>', dockerfile: 'Dockerfile' } });
}

/** Docker gives a scratch image its default PATH. */
const PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const labels = (p: Plan): Record<string, string> => p.stages[p.stages.length - 1]?.config.labels ?? {};
const env = (p: Plan): string[] => p.stages[p.stages.length - 1]?.config.env ?? [];

async function planError(text: string, o: { buildArgs?: Record<string, string>; target?: string } = {}): Promise<UserError> {
  try {
    await plan(text, o);
  } catch (e) {
    if (e instanceof UserError) return e;
    throw e;
  }
  throw new Error('no error');
}

describe('ARG and ENV by Docker rules', () => {
  test('ARG before FROM is global: a stage sees it only after redeclaring it', async () => {
    const p = await plan('ARG V=1\nFROM scratch\nLABEL a=${V:-x}\nARG V\nLABEL b=${V:-x}\n');
    expect(labels(p)).toEqual({ a: 'x', b: '1' });
    expect(p.globalArgs).toEqual([{ name: 'V', value: '1' }]);
  });

  test('global ARGs expand in FROM', async () => {
    const p = await plan('ARG BASE=debian\nARG TAG=bookworm-slim\nFROM ${BASE}:${TAG}\n');
    expect(p.stages[0]?.base).toEqual({ kind: 'image', ref: 'debian:bookworm-slim' });
  });

  test('--build-arg overrides ARG defaults, global and in a stage', async () => {
    const p = await plan('ARG V=1\nFROM scratch\nARG V\nARG W=2\nLABEL v=$V w=$W\n', { buildArgs: { V: 'cli', W: 'cli2' } });
    expect(labels(p)).toEqual({ v: 'cli', w: 'cli2' });
    expect(p.unusedBuildArgs).toEqual([]);
  });

  test('a stage ARG default beats the global value; a build arg beats both', async () => {
    expect(labels(await plan('ARG V=global\nFROM scratch\nARG V=stage\nLABEL v=$V\n'))).toEqual({ v: 'stage' });
    expect(labels(await plan('ARG V=global\nFROM scratch\nARG V=stage\nLABEL v=$V\n', { buildArgs: { V: 'cli' } }))).toEqual({ v: 'cli' });
  });

  test('build args no ARG declares are reported unused; proxy args are predefined', async () => {
    const p = await plan('FROM scratch\nLABEL x=$NOPE\n', { buildArgs: { NOPE: '1', HTTP_PROXY: 'http://p' } });
    expect(p.unusedBuildArgs).toEqual(['NOPE']);
    expect(labels(p)).toEqual({ x: '' }); // undeclared: not visible, expands to empty
  });

  test('ENV beats an ARG of the same name', async () => {
    expect(labels(await plan('FROM scratch\nARG X=arg\nENV X=env\nLABEL x=$X\n', { buildArgs: { X: 'cli' } }))).toEqual({ x: 'env' });
  });

  test('pairs of one ENV see the environment from before it', async () => {
    const p = await plan('FROM scratch\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\n');
    expect(env(p)).toEqual([PATH, 'abc=bye', 'def=hello', 'ghi=bye']);
  });

  test('ENV legacy form, quotes and escapes', async () => {
    const p = await plan('FROM scratch\nENV A hello world\nENV B="x y" C=a\\ b D=\'$A\'\n');
    expect(env(p)).toEqual([PATH, 'A=hello world', 'B=x y', 'C=a b', 'D=$A']);
  });

  test('a stage built FROM this one continues with its ENV and ARG values; the image keeps only ENV (BuildKit)', async () => {
    const p = await plan('FROM scratch AS base\nARG A=1\nENV E=2\nFROM base\nLABEL a=${A:-unset} e=$E\nFROM scratch\nLABEL a=${A:-unset}\n', { target: '1' });
    expect(labels(p)).toEqual({ a: '1', e: '2' });
    expect(env(p)).toEqual([PATH, 'E=2']);
    expect(labels(await plan('FROM scratch AS base\nARG A=1\nFROM scratch\nLABEL a=${A:-unset}\n'))).toEqual({ a: 'unset' });
  });

  test('RUN sees ENV and the ARGs in scope, in the order they were last set', async () => {
    const p = await plan('FROM scratch\nARG A=1\nENV B=2\nRUN env\n');
    const run = p.stages[0]?.steps.find((s) => s.keyword === 'RUN');
    expect(run?.env).toEqual([PATH, 'A=1', 'B=2']);
    expect(run?.command).toEqual(['/bin/sh', '-c', 'env']);
  });

  test('RUN, CMD and ENTRYPOINT are not expanded by the builder', async () => {
    const p = await plan('FROM scratch\nENV A=1\nRUN echo $A\nCMD echo $A\n');
    expect(p.stages[0]?.steps[1]?.command).toEqual(['/bin/sh', '-c', 'echo $A']);
    expect(p.stages[0]?.config.cmd).toEqual(['/bin/sh', '-c', 'echo $A']);
  });

  test('an expansion error points at its line', async () => {
    const e = await planError('FROM scratch\nENV A=1\nLABEL x="${A:?needs A}" y="${B:?B is required}"\n');
    expect(e.message).toMatch(/B: B is required/);
    expect(e.line).toBe(3);
  });
});

describe('stages', () => {
  const multi = 'FROM scratch AS Build\nLABEL s=build\nFROM scratch AS unused\nLABEL s=unused\nFROM scratch AS test\nCOPY --from=BUILD /a /b\nFROM scratch\nCOPY --from=0 /a /c\n';

  test('the last stage is the default target; stages it does not need are skipped', async () => {
    const p = await plan(multi);
    expect(p.target).toEqual({ index: 3 });
    expect(p.stages.map((s) => s.index)).toEqual([0, 3]);
    expect(p.skipped).toEqual([{ index: 1, name: 'unused' }, { index: 2, name: 'test' }]);
  });

  test('--target picks a target by name, case-insensitively, or by index', async () => {
    const p = await plan(multi, { target: 'TEST' });
    expect(p.target).toEqual({ index: 2, name: 'test' });
    expect(p.stages.map((s) => s.name)).toEqual(['build', 'test']);
    const step = p.stages[1]?.steps[0];
    expect(step?.from).toEqual({ stage: 0 });
    expect(step?.resources).toEqual([{ source: '/a', kind: 'stage', stage: 0, path: '/a' }]);
    expect((await plan(multi, { target: '1' })).stages.map((s) => s.index)).toEqual([1]);
  });

  test('FROM an earlier stage inherits its config', async () => {
    const p = await plan('FROM scratch AS a\nWORKDIR /app\nUSER 1000\nFROM a\nRUN true\n');
    expect(p.stages[1]?.base).toEqual({ kind: 'stage', stage: 0 });
    expect(p.stages[1]?.config).toMatchObject({ workingDir: '/app', user: '1000' });
  });

  test('COPY --from an image reference', async () => {
    const p = await plan('FROM scratch\nCOPY --from=busybox:1.36 /bin/busybox /bin/\n');
    expect(p.stages[0]?.steps[0]?.from).toEqual({ image: 'busybox:1.36' });
  });

  test.each<[string, string, RegExp, number]>([
    ['unknown stage', 'FROM scratch AS a\nFROM scratch\nCOPY --from=biuld /x /y\n', /unknown stage 'biuld' \(stages: a\)/, 3],
    ['a later stage (cycle)', 'FROM scratch AS a\nCOPY --from=b /x /y\nFROM scratch AS b\nCOPY --from=a /x /y\n', /stage 'b', which is defined later/, 2],
    ['the stage itself', 'FROM scratch AS a\nCOPY --from=a /x /y\n', /this stage itself/, 2],
    ['an index not earlier', 'FROM scratch\nCOPY --from=0 /x /y\n', /stage 0, which is this stage itself/, 2],
    ['FROM a later stage', 'FROM b AS a\nFROM scratch AS b\n', /names stage 'b', which is defined later/, 1],
    ['a duplicate stage name', 'FROM scratch AS a\nFROM scratch AS A\n', /duplicate stage name 'a'/, 2],
  ])('%s is an error pointing at the line', async (_n, text, want, line) => {
    const e = await planError(text);
    expect(e.message).toMatch(want);
    expect(e.line).toBe(line);
  });

  test('an unknown --target lists the stages', async () => {
    expect((await planError(multi, { target: 'nope' })).message).toMatch(/not a stage .*choose one of build, unused, test, 3/);
  });

  test('ONBUILD triggers of a base stage run at the start of the child', async () => {
    const p = await plan('FROM scratch AS base\nONBUILD LABEL from=onbuild\nFROM base\nLABEL own=1\n');
    expect(p.stages[0]?.config.onBuild).toEqual(['LABEL from=onbuild']);
    expect(p.stages[1]?.steps[0]).toMatchObject({ keyword: 'LABEL', onbuild: true, line: 3 });
    expect(p.stages[1]?.config).toMatchObject({ labels: { from: 'onbuild', own: '1' }, onBuild: [] });
  });
});

describe('instructions', () => {
  test('WORKDIR resolves relative to the previous one', async () => {
    const p = await plan('FROM scratch\nWORKDIR /a\nWORKDIR b\nWORKDIR ../c\nENV D=/d\nWORKDIR $D/e\n');
    expect(p.stages[0]?.steps.filter((s) => s.keyword === 'WORKDIR').map((s) => s.value)).toEqual(['/a', '/a/b', '/a/c', '/d/e']);
  });

  test('COPY destinations resolve against WORKDIR; several sources need a directory', async () => {
    const p = await plan('FROM scratch\nWORKDIR /app\nCOPY a .\nCOPY a b sub/\nCOPY ["x y", "/abs"]\n');
    expect(p.stages[0]?.steps.slice(1).map((s) => s.dest)).toEqual(['/app/', '/app/sub/', '/abs']);
    expect((await planError('FROM scratch\nCOPY a b /dst\n')).message).toMatch(/more than one source needs a directory destination ending in \/: write \/dst\//);
  });

  test('COPY flags are expanded and recorded', async () => {
    const p = await plan('FROM scratch\nARG U=app\nCOPY --chown=$U:$U --chmod=0755 --link a /a\n');
    expect(p.stages[0]?.steps[1]).toMatchObject({ chown: 'app:app', chmod: '0755', link: true });
    expect((await planError('FROM scratch\nCOPY --chmod=u+x a /a\n')).message).toMatch(/not an octal mode/);
  });

  test('ENTRYPOINT resets a CMD inherited from the base stage, not one set in the same stage', async () => {
    const text = 'FROM scratch AS a\nCMD ["x"]\nFROM a\nENTRYPOINT ["e"]\nFROM a\nCMD ["y"]\nENTRYPOINT ["e"]\n';
    expect((await plan(text, { target: '1' })).stages[1]?.config).toMatchObject({ entrypoint: ['e'], cmd: null });
    expect((await plan(text)).stages[1]?.config).toMatchObject({ entrypoint: ['e'], cmd: ['y'] });
  });

  test('SHELL changes the shell of later shell forms', async () => {
    const p = await plan('FROM scratch\nSHELL ["/bin/bash", "-o", "pipefail", "-c"]\nRUN a | b\nCMD c\n');
    expect(p.stages[0]?.steps[1]?.command).toEqual(['/bin/bash', '-o', 'pipefail', '-c', 'a | b']);
    expect(p.stages[0]?.config.cmd).toEqual(['/bin/bash', '-o', 'pipefail', '-c', 'c']);
  });

  test('EXPOSE, VOLUME, USER, STOPSIGNAL, LABEL, MAINTAINER', async () => {
    const p = await plan('FROM scratch\nARG P=8080\nEXPOSE $P 53/UDP 9000-9001\nVOLUME ["/data", "/logs"]\nVOLUME /cache /tmp/x\nUSER app:app\nSTOPSIGNAL quit\nLABEL "a b"="c d" e=f\nMAINTAINER Jane <j@x>\n');
    expect(p.stages[0]?.config).toMatchObject({
      exposedPorts: ['8080/tcp', '53/udp', '9000/tcp', '9001/tcp'],
      volumes: ['/data', '/logs', '/cache', '/tmp/x'],
      user: 'app:app',
      stopSignal: 'quit',
      labels: { 'a b': 'c d', e: 'f' },
    });
    expect(p.stages[0]?.steps.at(-1)).toMatchObject({ keyword: 'MAINTAINER', value: 'Jane <j@x>' });
  });

  test('HEALTHCHECK forms and durations', async () => {
    const p = await plan('FROM scratch AS a\nHEALTHCHECK --interval=5s --timeout=1m30s --start-period=500ms --retries=3 CMD curl -f http://localhost/ || exit 1\nFROM a\nHEALTHCHECK CMD ["/bin/check", "x"]\nFROM a\nHEALTHCHECK NONE\n', { target: '2' });
    expect(p.stages[0]?.config.healthcheck).toEqual({ test: ['CMD-SHELL', 'curl -f http://localhost/ || exit 1'], intervalNs: 5e9, timeoutNs: 90e9, startPeriodNs: 5e8, retries: 3 });
    expect(p.stages[1]?.config.healthcheck).toEqual({ test: ['NONE'] });
    expect((await plan('FROM scratch\nHEALTHCHECK CMD ["/bin/check", "x"]\n')).stages[0]?.config.healthcheck).toEqual({ test: ['CMD', '/bin/check', 'x'] });
    expect(parseDuration('1h2m3s')).toBe(3723e9);
    expect(parseDuration('5')).toBeUndefined();
  });

  test('RUN --mount parsed; heredoc RUN keeps its body', async () => {
    const p = await plan('FROM scratch\nRUN --mount=type=cache,target=/root/.cache,id=x --network=none <<EOF\necho $HOME\nEOF\n');
    expect(p.stages[0]?.steps[0]).toMatchObject({
      mounts: [{ type: 'cache', target: '/root/.cache', id: 'x' }],
      network: 'none',
      heredocs: [{ name: 'EOF', content: 'echo $HOME\n', expand: true, chomp: false }],
    });
  });

  test('COPY heredoc: unquoted delimiters expand, quoted ones do not', async () => {
    const p = await plan('FROM scratch\nENV A=1\nCOPY <<EOF /a\nx=$A "${A}"\nEOF\nCOPY <<"EOF" /b\nx=$A\nEOF\n');
    const [a, b] = [p.stages[0]?.steps[1], p.stages[0]?.steps[2]];
    expect(a?.resources?.[0]).toMatchObject({ kind: 'heredoc', size: Buffer.byteLength('x=1 "1"\n'), sha256: createHash('sha256').update('x=1 "1"\n').digest('hex') });
    expect(b?.resources?.[0]?.sha256).toBe(createHash('sha256').update('x=$A\n').digest('hex'));
  });

  test.each<[string, string, RegExp]>([
    ['instruction before FROM', 'RUN x\nFROM scratch\n', /only ARG may come before FROM/],
    ['no FROM', 'ARG A\n', /no FROM instruction/],
    ['bad EXPOSE', 'FROM scratch\nEXPOSE http\n', /EXPOSE http is not a port/],
    ['bad STOPSIGNAL', 'FROM scratch\nSTOPSIGNAL SIGNOPE\n', /not a signal/],
    ['bad HEALTHCHECK', 'FROM scratch\nHEALTHCHECK curl x\n', /HEALTHCHECK takes NONE or/],
    ['bad duration', 'FROM scratch\nHEALTHCHECK --interval=5 CMD x\n', /not a duration/],
    ['ONBUILD FROM', 'FROM scratch\nONBUILD FROM x\n', /ONBUILD FROM is not allowed/],
    ['ENV without value', 'FROM scratch\nENV A\n', /must have two arguments/],
    ['ENV pair without =', 'FROM scratch\nENV A=1 B\n', /can't find = in "B"/],
    ['COPY with one argument', 'FROM scratch\nCOPY a\n', /needs at least one source and a destination/],
    ['COPY of a URL', 'FROM scratch\nCOPY http://x/y /y\n', /COPY cannot fetch URLs/],
    ['FROM with junk', 'FROM a b c d\n', /FROM takes an image/],
    ['a blank ARG name', 'FROM scratch\nARG =1\n', /ARG names can not be blank/],
    ['RUN --mount of an unknown type', 'FROM scratch\nRUN --mount=type=nfs true\n', /not a mount type/],
  ])('%s is a one-line error with its line', async (_n, text, want) => {
    const e = await planError(text);
    expect(e.message).toMatch(want);
    expect(e.message.includes('\n')).toBe(false);
    expect(e.line).toBeGreaterThan(0);
  });
});

test('the plan is versioned and carries a digest of its content', async () => {
  const a = await plan('FROM scratch\nLABEL a=1\n');
  const b = await plan('FROM scratch\nLABEL a=2\n');
  expect(a.schemaVersion).toBe(1);
  expect(a.digest).toMatch(/^[a-f0-9]{64}$/);
  expect(a.digest).not.toBe(b.digest);
  expect((await plan('FROM scratch\nLABEL a=1\n')).digest).toBe(a.digest);
});

describe("BuildKit's semantics (issue 17)", () => {
  const step = (p: Plan, i: number): Plan['stages'][number]['steps'][number] | undefined => p.stages[p.stages.length - 1]?.steps[i];
  const cfg = (p: Plan): Plan['stages'][number]['config'] => p.stages[p.stages.length - 1]!.config;

  test('a line ending in an escaped escape does not swallow the next instruction', async () => {
    expect(env(await plan('FROM scratch\nENV A=x\\\\\nENV B=y\n'))).toEqual([PATH, 'A=x\\', 'B=y']);
  });

  test('CMD [] is the exec form with no arguments; ENTRYPOINT [] clears the entrypoint', async () => {
    const p = await plan('FROM scratch\nCMD []\n');
    expect(step(p, 0)).toMatchObject({ form: 'exec', command: [] });
    expect(cfg(p).cmd).toEqual([]);
    expect(cfg(await plan('FROM scratch\nENTRYPOINT ["a"]\nENTRYPOINT [ ]\n')).entrypoint).toBeNull();
    // The shell form with no arguments is the shell with an empty command, as BuildKit makes it.
    expect(cfg(await plan('FROM scratch\nCMD\n')).cmd).toEqual(['/bin/sh', '-c', '']);
  });

  test('automatic platform args: global scope for FROM, inside a stage only after ARG', async () => {
    const host = hostPlatform();
    const arch = host.split('/')[1] as string;
    const p = await plan('FROM busybox:${TARGETARCH} AS a\nLABEL before=${TARGETARCH:-none}\nARG TARGETARCH\nARG BUILDPLATFORM\nARG TARGETSTAGE\nLABEL arch=$TARGETARCH build=$BUILDPLATFORM stage=$TARGETSTAGE\n');
    expect(p.stages[0]?.base).toEqual({ kind: 'image', ref: `busybox:${arch}` });
    expect(labels(p)).toEqual({ before: 'none', arch, build: host, stage: 'a' });
    const arm = await plan('FROM --platform=$BUILDPLATFORM scratch\nARG TARGETPLATFORM\nARG TARGETOS\nARG TARGETARCH\nARG TARGETVARIANT\nARG BUILDOS\nARG BUILDARCH\nLABEL p=$TARGETPLATFORM os=$TARGETOS arch=$TARGETARCH v=$TARGETVARIANT bos=$BUILDOS barch=$BUILDARCH\n', { platform: 'linux/arm64' });
    expect(labels(arm)).toEqual({ p: 'linux/arm64', os: 'linux', arch: 'arm64', v: '', bos: 'linux', barch: arch });
    expect(arm.stages[0]?.platform).toBe(host);
    // A build arg overrides an automatic arg; a global ARG with a value does too.
    expect(labels(await plan('FROM scratch\nARG TARGETARCH\nLABEL a=$TARGETARCH\n', { buildArgs: { TARGETARCH: 'riscv64' } }))).toEqual({ a: 'riscv64' });
    expect((await plan('ARG TARGETARCH=s390x\nFROM img:$TARGETARCH\n')).stages[0]?.base).toEqual({ kind: 'image', ref: 'img:s390x' });
    expect((await plan('ARG TARGETARCH\nFROM img:$TARGETARCH\n')).stages[0]?.base).toEqual({ kind: 'image', ref: `img:${arch}` });
  });

  test('HEALTHCHECK --start-interval is kept; durations under 1ms are refused, 0 is not', async () => {
    const p = await plan('FROM scratch\nHEALTHCHECK --start-interval=2s --interval=0 CMD true\n');
    expect(cfg(p).healthcheck).toEqual({ test: ['CMD-SHELL', 'true'], startIntervalNs: 2e9, intervalNs: 0 });
    expect((await planError('FROM scratch\nHEALTHCHECK --timeout=500us CMD true\n')).message).toMatch(/--timeout=500us is less than 1ms/);
    expect((await planError('FROM scratch\nHEALTHCHECK --retries=-1 CMD true\n')).message).toMatch(/negative/);
    // BuildKit reads no flags of HEALTHCHECK NONE.
    expect(cfg(await plan('FROM scratch\nHEALTHCHECK --interval=1s NONE\n')).healthcheck).toEqual({ test: ['NONE'] });
  });

  test('VOLUME: the shell form splits before expansion; a quoted path with a blank is refused', async () => {
    const p = await plan('FROM scratch\nARG X="b c"\nVOLUME /a $X\n');
    expect(cfg(p).volumes).toEqual(['/a', 'b c']);
    expect((await planError('FROM scratch\nVOLUME "/a b"\n')).message).toMatch(/VOLUME: unexpected end of statement while looking for matching double-quote/);
    expect((await planError('FROM scratch\nVOLUME $UNSET\n')).message).toMatch(/expands to an empty string/);
  });

  test('the last of ENV and ARG for a name wins; the image config keeps the ENV', async () => {
    const p = await plan('FROM scratch\nENV V=b\nARG V=a\nLABEL v=$V\nRUN env\n');
    expect(labels(p)).toEqual({ v: 'a' });
    expect(step(p, 3)?.env).toEqual([PATH, 'V=a']);
    expect(env(p)).toEqual([PATH, 'V=b']);
    expect(labels(await plan('FROM scratch\nARG V=a\nENV V=b\nLABEL v=$V\n'))).toEqual({ v: 'b' });
    // An ARG without a value and without a build arg does not touch an ENV of its name.
    expect(labels(await plan('FROM scratch\nENV V=b\nARG V\nLABEL v=$V\n'))).toEqual({ v: 'b' });
  });

  test('STOPSIGNAL is kept as written; it must name a signal', async () => {
    expect(cfg(await plan('FROM scratch\nSTOPSIGNAL kill\n')).stopSignal).toBe('kill');
    expect(cfg(await plan('FROM scratch\nSTOPSIGNAL SIGrtmin+3\n')).stopSignal).toBe('SIGrtmin+3');
    expect(cfg(await plan('FROM scratch\nSTOPSIGNAL 9\n')).stopSignal).toBe('9');
    for (const bad of ['0', 'SIGNOPE', 'RTMIN+16']) expect((await planError(`FROM scratch\nSTOPSIGNAL ${bad}\n`)).message).toMatch(/is not a signal/);
  });

  test('ADD --unpack=false keeps a local archive as a file', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'firebuild-unpack-'));
    try {
      fs.writeFileSync(path.join(dir, 'a.tar.gz'), zlib.gzipSync(Buffer.from('not a tar, but gzip')));
      const context = await LocalContext.open(dir, path.join(dir, 'Dockerfile'));
      const p = await buildPlan('FROM scratch\nADD a.tar.gz /x/\nADD --unpack=false a.tar.gz /y/\nADD --unpack=true a.tar.gz /z/\n', { context, source: { kind: 'literal', ref: '<literal>', dockerfile: 'Dockerfile' } });
      // false: the engines copy it as it is (the vm engine would otherwise unpack what reads as a tar).
      expect(p.stages[0]?.steps.map((s) => s.resources?.[0]?.extract)).toEqual([true, false, true]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('ADD of a URL with a ?query to a file destination; --unpack=true marks it for unpacking', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'firebuild-url-'));
    const served = await serveDir(dir);
    try {
      fs.writeFileSync(path.join(dir, 'file.bin'), 'payload');
      const p = await buildPlan(`FROM scratch\nADD ${served.url}/file.bin?token=a*b /opt/file\nADD --unpack=true ${served.url}/file.bin /opt/\n`, { context: anyContext, source: { kind: 'literal', ref: '<literal>', dockerfile: 'Dockerfile' }, allowHostUrls: true });
      expect(p.stages[0]?.steps[0]).toMatchObject({ dest: '/opt/file', resources: [{ kind: 'url', url: `${served.url}/file.bin?token=a*b`, size: 7 }] });
      expect(p.stages[0]?.steps[1]?.resources?.[0]).toMatchObject({ kind: 'url', extract: true });
    } finally {
      await served.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('COPY heredocs: partly quoted names, <<- bodies, BuildKit expansion of the body', async () => {
    const p = await plan("FROM scratch\nENV A=1\nCOPY <<eo'f' <<-X <<Y /d/\n$A\neof\n\t$A \\$A \"$A\"\n\tX\na\\tb\nY\n");
    const s = step(p, 1);
    expect(s?.heredocs).toEqual([
      { name: 'eof', content: '$A\n', expand: false, chomp: false },
      { name: 'X', content: '1 $A "1"\n', expand: true, chomp: true },
      { name: 'Y', content: 'atb\n', expand: true, chomp: false },
    ]);
    expect(s?.resources?.map((r) => [r.kind, r.path, r.size])).toEqual([['heredoc', 'eof', 3], ['heredoc', 'X', 9], ['heredoc', 'Y', 4]]);
    expect((await planError('FROM scratch\nCOPY a <<EOF\nx\nEOF\n')).message).toMatch(/cannot take a heredoc as its destination/);
  });

  test('ONBUILD RUN with a heredoc is stored with its body and runs in the child', async () => {
    const p = await plan('FROM scratch AS base\nONBUILD RUN <<EOF\necho hi\nEOF\nFROM base\n');
    expect(p.stages[0]?.config.onBuild).toEqual(['RUN <<EOF\necho hi\nEOF']);
    expect(p.stages[1]?.steps[0]).toMatchObject({ keyword: 'RUN', onbuild: true, heredocs: [{ name: 'EOF', content: 'echo hi\n' }] });
  });

  test('COPY --from takes no variables', async () => {
    expect((await planError('FROM scratch AS a\nFROM scratch\nARG S=a\nCOPY --from=$S /x /y\n')).message).toMatch(/variables are not expanded in --from/);
    expect((await plan('FROM scratch AS a\nFROM scratch\nCOPY --from=a /x /y\n')).stages[1]?.steps[0]?.from).toEqual({ stage: 0 });
  });

  test('JSON-looking arguments that are not JSON run as shell form', async () => {
    const p = await plan('FROM scratch\nRUN [ "$A" = "" ] && echo empty\n');
    expect(step(p, 0)).toMatchObject({ form: 'shell', command: ['/bin/sh', '-c', '[ "$A" = "" ] && echo empty'] });
  });
});
