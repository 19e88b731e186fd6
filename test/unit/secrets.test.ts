import { afterEach, beforeEach, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { inspect } from 'node:util';
import { buildxArgv, buildxSecrets } from '../../src/engine/buildx.js';
import { vmUnsupported } from '../../src/engine/vm-engine.js';
import { parseSecretMount, secretMounts } from '../../src/engine/vm/secrets.js';
import type { Step } from '../../src/dockerfile/plan-schema.js';
import { renderSecrets } from '../../src/guest/run-config.js';
import { MemoryLogger } from '../../src/util/logger.js';
import { checkSecretFiles, parseSecretFlag, parseSecretRefsInput, parseSecretsInput, readSecret, SecretValue, type SecretSource } from '../../src/util/secrets.js';
import { stepSecrets } from '../../src/engine/vm/secrets.js';

/** Build secrets: the flag and inputs as docker buildx and docker/build-push-action take them; values never printed. */
const VALUE = 'hunter2-s3cr3t';
const msg = (f: () => unknown): string => {
  try {
    f();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('expected an error');
};
const amsg = async (f: () => Promise<unknown>): Promise<string> => {
  try {
    await f();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('expected an error');
};

describe('--secret as docker buildx build --secret', () => {
  test.each([
    ['id=tok,src=/run/x/token.txt', { id: 'tok', kind: 'file', path: '/run/x/token.txt' }],
    ['id=tok,source=/a', { id: 'tok', kind: 'file', path: '/a' }],
    ['type=file,id=tok,src=/a', { id: 'tok', kind: 'file', path: '/a' }],
    ['src=/home/u/.npmrc', { id: '.npmrc', kind: 'file', path: '/home/u/.npmrc' }],
    ['id=tok,env=GH_TOKEN', { id: 'tok', kind: 'env', env: 'GH_TOKEN' }],
    ['env=GH_TOKEN', { id: 'GH_TOKEN', kind: 'env', env: 'GH_TOKEN' }],
    ['type=env,id=tok,src=GH_TOKEN', { id: 'tok', kind: 'env', env: 'GH_TOKEN' }],
    ['type=env,id=GH_TOKEN', { id: 'GH_TOKEN', kind: 'env', env: 'GH_TOKEN' }],
    ['"id=tok","src=/a,b"', { id: 'tok', kind: 'file', path: '/a,b' }],
  ] as [string, SecretSource][])('%s', (spec, want) => {
    expect(parseSecretFlag(spec, {})).toEqual(want);
  });

  test('id=NAME alone: the variable NAME when it is set, else the file NAME (BuildKit\'s store)', () => {
    expect(parseSecretFlag('id=TOKEN', { TOKEN: 'x' })).toEqual({ id: 'TOKEN', kind: 'env', env: 'TOKEN' });
    expect(parseSecretFlag('id=TOKEN', {})).toEqual({ id: 'TOKEN', kind: 'file', path: path.resolve('TOKEN') });
  });

  test.each([
    ['id=tok,value=hunter2-s3cr3t', "unknown key 'value'"],
    ['hunter2-s3cr3t', 'a field is not key=value'],
    ['id=tok,type=hunter2-s3cr3t', 'type is neither file nor env'],
    ['id=tok,src=/a,env=B', 'give src or env, not both'],
    ['id=tok,src=', 'src is empty'],
    ['type=file,env=A', 'type=file reads src=FILE, not env'],
    ['type=env', 'give id=NAME'],
    ['id=..,src=/a', "the secret id '..' is not a valid secret id"],
    ['id=a/b,src=/a', "the secret id 'a/b' is not a valid secret id"],
    ['id=tok,env=1BAD', "'1BAD' is not an environment variable name"],
    ['id=tok,"src=/a', 'an unclosed double quote'],
  ])('%s: one line', (spec, want) => {
    const m = msg(() => parseSecretFlag(spec, {}));
    expect(m).toContain(want);
    expect(m).not.toContain('\n');
    expect(m).not.toContain(VALUE);
  });
});

describe("build-rootfs inputs as docker/build-push-action's", () => {
  test('secrets: id=value lines; a value keeps its = signs; a quoted record spans lines ("" is a quote)', () => {
    const s = parseSecretsInput(`GIT_AUTH_TOKEN=abc=def\n\n  npm=tok  \r\n"KEY=line 1\nline ""2""\n"\n`);
    expect(s.map((x) => [x.id, x.kind === 'value' ? x.value.bytes().toString() : ''])).toEqual([['GIT_AUTH_TOKEN', 'abc=def'], ['npm', 'tok'], ['KEY', 'line 1\nline "2"\n']]);
  });

  test('secrets: errors name the input and the line, never the value', () => {
    for (const [text, want] of [[`${VALUE}`, "input 'secrets' line 1 is not id=value"], [`a=b\n=${VALUE}`, "line 2 is not id=value"], [`bad id=${VALUE}`, 'line 1: the text before the first = is not a valid secret id'], [`"a=${VALUE}`, 'line 1: an unclosed double quote'], [`"a=${VALUE}" x`, 'text after the closing double quote']] as const) {
      const m = msg(() => parseSecretsInput(text));
      expect(m).toContain(want);
      expect(m).not.toContain(VALUE);
    }
  });

  test('secret-files: id=path lines; secret-envs: id=VARIABLE, newline or comma separated', () => {
    expect(parseSecretRefsInput('npmrc=/home/runner/.npmrc\nkey=rel/key', 'secret-files', 'file')).toEqual([{ id: 'npmrc', kind: 'file', path: '/home/runner/.npmrc' }, { id: 'key', kind: 'file', path: path.resolve('rel/key') }]);
    expect(parseSecretRefsInput('a=A_VAR, b=B\nc=C', 'secret-envs', 'env')).toEqual([{ id: 'a', kind: 'env', env: 'A_VAR' }, { id: 'b', kind: 'env', env: 'B' }, { id: 'c', kind: 'env', env: 'C' }]);
    expect(msg(() => parseSecretRefsInput('nopath', 'secret-files', 'file'))).toContain("input 'secret-files' has 'nopath': write id=path");
    expect(msg(() => parseSecretRefsInput('a=not-a-name', 'secret-envs', 'env'))).toContain("'not-a-name' is not an environment variable name");
  });
});

describe('a secret value never prints', () => {
  test('String, template, JSON and inspect give [secret]; bytes() gives the value', () => {
    const v = new SecretValue(VALUE);
    const src: SecretSource = { id: 'tok', kind: 'value', value: v };
    expect(String(v)).toBe('[secret]');
    expect(`${v}`).toBe('[secret]');
    expect(JSON.stringify({ src })).not.toContain(VALUE);
    expect(inspect({ src }, { depth: 10, showHidden: true })).not.toContain(VALUE);
    expect(v.bytes().toString()).toBe(VALUE);
  });
});

describe('reading secrets', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-secrets-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('a file, a variable, a value; an unset variable is a missing secret', async () => {
    fs.writeFileSync(path.join(dir, 'tok'), `${VALUE}\n`);
    expect((await readSecret({ id: 'f', kind: 'file', path: path.join(dir, 'tok') }))!.bytes().toString()).toBe(`${VALUE}\n`);
    expect((await readSecret({ id: 'e', kind: 'env', env: 'FB_T' }, { FB_T: VALUE }))!.bytes().toString()).toBe(VALUE);
    expect(await readSecret({ id: 'e', kind: 'env', env: 'FB_T' }, {})).toBeUndefined();
    expect((await readSecret({ id: 'v', kind: 'value', value: new SecretValue(VALUE) }))!.bytes().toString()).toBe(VALUE);
  });

  test('a missing, non-regular or over-500-KiB file is one line naming the id and path, checked before the build', async () => {
    fs.writeFileSync(path.join(dir, 'big'), Buffer.alloc(500 * 1024 + 1, 0x41));
    expect(await amsg(() => checkSecretFiles([{ id: 'tok', kind: 'file', path: path.join(dir, 'nope') }]))).toBe(`secret 'tok' (file ${path.join(dir, 'nope')}) cannot be read (ENOENT): give an existing file in src=`);
    expect(await amsg(() => checkSecretFiles([{ id: 'd', kind: 'file', path: dir }]))).toContain('is not a regular file');
    expect(await amsg(() => checkSecretFiles([{ id: 'big', kind: 'file', path: path.join(dir, 'big') }]))).toContain('more than the 500 KiB');
    expect(await amsg(() => readSecret({ id: 'big', kind: 'value', value: new SecretValue(Buffer.alloc(500 * 1024 + 1)) }))).toContain('more than the 500 KiB');
  });
});

describe('BuildKit gets the secrets natively, never a value on argv', () => {
  test('files by path, variables by name, a value through the docker CLI\'s environment', () => {
    const secrets: SecretSource[] = [{ id: 'f', kind: 'file', path: '/p/a,b' }, { id: 'e', kind: 'env', env: 'GH' }, { id: 'v', kind: 'value', value: new SecretValue(VALUE) }];
    const argv = buildxArgv({ dockerfile: 'Dockerfile', buildArgs: {}, labels: {}, secrets });
    expect(argv.join(' ')).not.toContain(VALUE);
    expect(argv).toEqual(expect.arrayContaining(['--secret', 'id=f,"src=/p/a,b"', 'id=e,env=GH', 'id=v,env=FIREBUILD_SECRET_2']));
    expect(argv.at(-1)).toBe('-');
    expect(buildxSecrets(secrets).env).toEqual({ FIREBUILD_SECRET_2: VALUE });
  });
});

const where = { file: 'Dockerfile', line: 4 };
const step = (mounts: Record<string, string>[]): Step => ({ file: 'Dockerfile', line: 4, keyword: 'RUN', original: 'RUN x', form: 'shell', command: ['/bin/sh', '-c', 'x'], mounts });

describe('RUN --mount=type=secret as BuildKit reads it', () => {
  test.each([
    [{ type: 'secret', id: 'tok' }, { id: 'tok', target: '/run/secrets/tok', required: false, mode: 0o400, uid: 0, gid: 0 }],
    [{ type: 'secret', target: '/root/.npmrc' }, { id: '.npmrc', target: '/root/.npmrc', required: false, mode: 0o400, uid: 0, gid: 0 }],
    [{ type: 'secret', id: 'aws', env: 'AWS_KEY' }, { id: 'aws', env: 'AWS_KEY', required: false, mode: 0o400, uid: 0, gid: 0 }],
    [{ type: 'secret', id: 'aws', env: 'AWS_KEY', dst: '/k' }, { id: 'aws', target: '/k', env: 'AWS_KEY', required: false, mode: 0o400, uid: 0, gid: 0 }],
    [{ type: 'secret', id: 't', required: 'true', mode: '0440', uid: '1000', gid: '100' }, { id: 't', target: '/run/secrets/t', required: true, mode: 0o440, uid: 1000, gid: 100 }],
    [{ type: 'secret', id: 't', required: 'False', destination: 'rel/x' }, { id: 't', target: 'rel/x', required: false, mode: 0o400, uid: 0, gid: 0 }],
  ])('%j', (m, want) => {
    expect(parseSecretMount(m, where)).toEqual(want);
  });

  test.each([
    [{ type: 'secret', id: 't', from: 'x' }, "does not take 'from'"],
    [{ type: 'secret' }, 'needs id=NAME'],
    [{ type: 'secret', id: 't', mode: '0999' }, 'mode=0999 is not an octal mode'],
    [{ type: 'secret', id: 't', uid: '-1' }, 'uid=-1 is not a number'],
    [{ type: 'secret', id: 't', required: 'maybe' }, 'required=maybe is not true or false'],
    [{ type: 'secret', id: 't', target: '' }, 'target is empty'],
    [{ type: 'secret', id: 't', env: '9X' }, "'9X' is not an environment variable name"],
  ])('%j is one line at the RUN', (m, want) => {
    let err: unknown;
    try {
      parseSecretMount(m, where);
    } catch (e) {
      err = e;
    }
    expect((err as Error).message).toContain(want);
    expect(err).toMatchObject({ file: 'Dockerfile', line: 4 });
  });

  test('a relative target is under the WORKDIR; the root, /proc, /sys and /.firebuild are refused', () => {
    expect(secretMounts(step([{ type: 'secret', id: 't', target: 'conf/t' }]), '/srv/app')[0]!.target).toBe('/srv/app/conf/t');
    expect(() => secretMounts(step([{ type: 'secret', id: 't', target: '/' }]), '/')).toThrow('the target is the root directory');
    expect(() => secretMounts(step([{ type: 'secret', id: 't', target: '/proc/x' }]), '/')).toThrow('under /proc');
    expect(() => secretMounts(step([{ type: 'secret', id: 't', target: '../.firebuild/t' }]), '/srv')).toThrow('under /.firebuild');
  });

  test('the vm engine takes secret mounts with cache, bind, tmpfs and ssh ones', () => {
    expect(vmUnsupported(step([{ type: 'secret', id: 't' }]))).toBeUndefined();
    expect(vmUnsupported(step([{ type: 'secret', id: 't' }, { type: 'cache', target: '/c' }]))).toBeUndefined();
    expect(vmUnsupported(step([{ type: 'bind', target: '/c' }, { type: 'tmpfs', target: '/t' }]))).toBeUndefined();
    expect(vmUnsupported(step([{ type: 'secret', id: 't' }, { type: 'ssh' }, { type: 'cache', target: '/c' }, { type: 'bind', target: '/b' }, { type: 'tmpfs', target: '/t' }]))).toBeUndefined();
  });

  test('a missing secret is skipped; a missing required one is one line naming the id and how to pass it', async () => {
    const log = new MemoryLogger();
    const mounts = [parseSecretMount({ type: 'secret', id: 'opt' }, where), parseSecretMount({ type: 'secret', id: 'given', env: 'G' }, where)];
    const got = await stepSecrets(mounts, new Map([['given', { id: 'given', kind: 'value', value: new SecretValue(VALUE) } as SecretSource]]), 'RUN at Dockerfile:4', where, log);
    expect(got).toEqual([{ value: expect.any(SecretValue), env: 'G', mode: 0o400, uid: 0, gid: 0 }]);
    let err: unknown;
    try {
      await stepSecrets([parseSecretMount({ type: 'secret', id: 'tok', required: 'true' }, where)], new Map(), 'RUN at Dockerfile:4', where, log);
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ file: 'Dockerfile', line: 4, message: "RUN at Dockerfile:4: the secret 'tok' is required (required=true) and was not given: pass --secret id=tok,src=FILE (or env=VARIABLE), or in build-rootfs the input secrets (tok=value), secret-files or secret-envs" });
  });
});

describe('the secrets on the config disk, for both inits', () => {
  test('secrets.nul: six fields a secret; secrets.sh: one fb_secret call a secret, quoted for the shell', () => {
    const r = renderSecrets([
      { value: new SecretValue(VALUE), target: "/run/secrets/it's here", mode: 0o400, uid: 0, gid: 0 },
      { value: new SecretValue(VALUE), env: 'TOKEN', mode: 0o440, uid: 1000, gid: 100 },
    ]);
    expect(r.nul.toString().split('\0')).toEqual(['0', "/run/secrets/it's here", '0400', '0', '0', '', '1', '', '0440', '1000', '100', 'TOKEN', '']);
    const out = execFileSync('sh', ['-c', `fb_secret() { printf '[%s]' "$@"; echo; }\n${r.sh}`], { encoding: 'utf8' });
    expect(out).toBe("[0][/run/secrets/it's here][0400][0][0][]\n[1][][0440][1000][100][TOKEN]\n");
    expect(r.nul.toString() + r.sh).not.toContain(VALUE);
  });
});
