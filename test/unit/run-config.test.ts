import { describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { effectiveCommand, kernelIpArg, mergeEnv, renderEnvSh, renderRunNul, renderRunSh, shellQuote } from '../../src/guest/run-config.js';
import { ImageConfigSchema } from '../../src/store/metadata.js';

/** Evaluate generated shell with the host's sh and print variables: quoting is proven, not assumed. */
function evalSh(script: string, print: string): string {
  return execFileSync('sh', ['-c', `${script}\n${print}`], { encoding: 'utf8' });
}

describe('run configuration for the guest init', () => {
  test.each(["plain", "with space", "quote ' inside", 'dollar $HOME and `cmd` and "dq"', 'new\nline', ''])('shellQuote round-trips %j', (s) => {
    expect(evalSh(`v=${shellQuote(s)}`, 'printf %s "$v"')).toBe(s);
  });

  test('run.sh sets the FB_ variables and the command with set --', () => {
    const sh = renderRunSh({ hostname: 'vm1', net: { mode: 'static', ip: '10.0.0.2/24', gateway: '10.0.0.1' }, dns: ['1.1.1.1', '9.9.9.9'], env: [], command: ['sh', '-c', 'echo "$1" $HOME', "it's"], user: 'app', workdir: '/srv', stopSignal: 'SIGQUIT', sshUser: 'debian' });
    const out = evalSh(sh, 'echo "$FB_HOSTNAME|$FB_NET|$FB_IP|$FB_GW|$FB_DNS|$FB_USER|$FB_WORKDIR|$FB_STOPSIGNAL|$FB_SSH_USER|$#"; for a in "$@"; do echo "[$a]"; done');
    expect(out).toBe('vm1|static|10.0.0.2/24|10.0.0.1|1.1.1.1 9.9.9.9|app|/srv|QUIT|debian|4\n[sh]\n[-c]\n[echo "$1" $HOME]\n[it\'s]\n');
  });

  test('env files then --env: later values win, first order kept; env.sh exports them verbatim', () => {
    const env = mergeEnv(['PATH=/bin', 'A=image'], ['A=file', 'B=file'], ['B=flag value', 'C=$(touch /tmp/pwned)']);
    expect(env).toEqual(['PATH=/bin', 'A=file', 'B=flag value', 'C=$(touch /tmp/pwned)']);
    expect(evalSh(renderEnvSh(env), 'echo "$A|$B|$C"')).toBe('file|flag value|$(touch /tmp/pwned)\n');
    expect(renderEnvSh(['1BAD=x', 'GOOD=y'])).toBe("export GOOD='y'\n");
  });

  test('ENTRYPOINT + CMD, and a command after -- replaces CMD', () => {
    const c = ImageConfigSchema.parse({ entrypoint: ['/e', '-v'], cmd: ['serve'] });
    expect(effectiveCommand(c)).toEqual(['/e', '-v', 'serve']);
    expect(effectiveCommand(c, ['check'])).toEqual(['/e', '-v', 'check']);
    expect(effectiveCommand(ImageConfigSchema.parse({ cmd: ['sh'] }), [])).toEqual(['sh']);
  });
});

describe('run configuration for the compiled init', () => {
  test('NUL-separated pairs, argv and env carry any byte but NUL, unquoted', () => {
    const nul = renderRunNul({
      hostname: 'h1', net: { mode: 'kernel', ip: '10.0.2.15/24', gateway: '10.0.2.2' }, dns: ['10.0.2.3', '1.1.1.1'],
      env: ['A=x y', "B=it's \"q\" $HOME", 'not an env line'], command: ['sh', '-c', 'echo "$A"; exit 3'],
      user: 'app:staff', workdir: '/srv', stopSignal: 'SIGQUIT', init: 'firebuild', halt: 'reboot',
    });
    const split = (b: Buffer): string[] => b.toString().split('\0').slice(0, -1);
    const pairs = split(nul.run);
    const kv = Object.fromEntries(pairs.flatMap((v, i) => (i % 2 ? [] : [[v, pairs[i + 1]]])));
    expect(kv).toEqual({
      FB_HOSTNAME: 'h1', FB_NET: 'kernel', FB_IP: '10.0.2.15/24', FB_GW: '10.0.2.2', FB_DNS: '10.0.2.3 1.1.1.1', FB_USER: 'app:staff',
      FB_WORKDIR: '/srv', FB_STOPSIGNAL: 'QUIT', FB_SSH_USER: '', FB_INIT: 'firebuild', FB_HALT: 'reboot', FB_BUILD: '',
    });
    expect(split(nul.argv)).toEqual(['sh', '-c', 'echo "$A"; exit 3']);
    expect(split(nul.env)).toEqual(['A=x y', "B=it's \"q\" $HOME"]);
  });

  test('a build step sets FB_BUILD=1 (the init keeps /tmp and /run in the image)', () => {
    const nul = renderRunNul({ hostname: 'b', net: { mode: 'none' }, env: [], command: ['true'], user: '', workdir: '/', stopSignal: '', build: true });
    const pairs = nul.run.toString().split('\0');
    expect(pairs[pairs.indexOf('FB_BUILD') + 1]).toBe('1');
  });

  test('STOPSIGNAL as written (kill, SIGusr1, 9) reaches the init as its signal name or number', () => {
    const sig = (stopSignal: string): string => {
      const pairs = renderRunNul({ hostname: 'b', net: { mode: 'none' }, env: [], command: ['true'], user: '', workdir: '/', stopSignal }).run.toString().split('\0');
      return pairs[pairs.indexOf('FB_STOPSIGNAL') + 1] as string;
    };
    expect([sig('kill'), sig('SIGusr1'), sig('9'), sig('')]).toEqual(['KILL', 'USR1', '9', 'TERM']);
  });

  test("the kernel's ip= argument: address, gateway, netmask from the prefix", () => {
    expect(kernelIpArg('10.0.2.15/24', '10.0.2.2')).toBe('ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off');
    expect(kernelIpArg('192.168.127.50/20')).toBe('ip=192.168.127.50:::255.255.240.0::eth0:off');
    expect(kernelIpArg('10.1.2.3/32', '10.1.2.1')).toBe('ip=10.1.2.3::10.1.2.1:255.255.255.255::eth0:off');
  });
});
