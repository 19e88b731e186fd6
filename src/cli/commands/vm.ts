import type { Command } from 'commander';
import { UserError } from '../../util/errors.js';
import { json, table } from '../format.js';
import type { RunRequest } from '../../commands/run.js';
import { collect, intFlag, Option, seconds, vmChoice, withProfileOptions, withVmOptions, type CliContext, type SettingsCliOpts, type VmCliOpts } from '../options.js';

/** run, ls, inspect, logs, kill, purge. */
export function register(program: Command, ctx: CliContext): void {
  const { out } = ctx;
  type RunCli = SettingsCliOpts & VmCliOpts & {
    from: string; name?: string; vmlinuxId?: string; mem: string; cpu: string; hostname?: string; env?: string[]; envFile?: string[];
    sshUser?: string; identityFile?: string; port?: string[]; daemonize?: boolean; bootTimeout: string;
    ipAddress?: string; init: string;
    waitTcp?: string[]; waitHttp?: string[]; waitHttpStatus: string; waitHttpBody?: string; waitTimeout: string; waitExitCode?: string;
  };
  withProfileOptions(
    withVmOptions(program
      .command('run')
      .description('boot a stored image as a microVM (QEMU microvm, or Firecracker under the jailer)')
      .requiredOption('--from <org/name:version>', 'the image to boot')
      .argument('[command...]', 'a command to run instead of CMD (after --)')
      .option('--name <name>', 'a unique name, 1-20 letters and digits')
      .option('--vmlinux-id <id>', 'kernel to boot (default: the only stored kernel)')
      .option('--mem <MiB>', 'memory', '256')
      .option('--cpu <n>', 'vCPUs', '1')
      .option('--hostname <name>', 'the guest hostname (default: the VM name)')
      .option('--env <KEY=value>', 'environment variable, repeatable (beats --env-file)', collect)
      .option('--env-file <file>', 'KEY=value file, repeatable, applied in order', collect)
      .option('--ssh-user <user>', 'install the --identity-file key for this user and start sshd')
      .option('--identity-file <file.pub>', 'SSH public key for --ssh-user')
      .option('--ip-address <ip>', 'request this IP from the CNI network\'s IPAM')
      .option('--port <[hostip:]hostport:guestport[/proto]>', 'publish a guest port, repeatable (user networking: host side 127.0.0.1 by default; CNI: iptables DNAT, every local address by default; host port 0 or auto: a free one)', collect)
      .addOption(new Option('--init <init>', "PID 1: firebuild's init runs the command; image hands over to the image's /sbin/init after the setup").choices(['firebuild', 'image']).default('firebuild'))
      .option('--daemonize', 'return once the VM is up, printing one JSON object')
      .option('--boot-timeout <seconds>', 'deadline for the init to start the command', '120')
      .option('--wait-tcp <port>', 'probe: a published host port (or auto:GUESTPORT) must accept connections, repeatable', collect)
      .option('--wait-http <url>', 'probe: an HTTP GET must answer --wait-http-status, repeatable', collect)
      .option('--wait-http-status <code>', 'expected HTTP status', '200')
      .option('--wait-http-body <text>', 'expected substring of the HTTP body')
      .option('--wait-exit-code <n>', 'probe: the command must exit with this code before --wait-timeout (then the VM is removed)')
      .option('--wait-timeout <seconds>', 'deadline for the probes', '60'), false),
    ctx.env,
    { runtime: true },
  ).action(async (command: string[], o: RunCli) => {
    // Every flag parsed and checked here, before anything is loaded or booted.
    if (o.ipAddress && !o.cniNetworkName) throw new UserError('--ip-address needs --cni-network-name');
    // Loaded here, not at the top: `image ls` and `--plan` must not load the VM use cases (cli.itg start-up).
    const { parseProbePort } = await import('../../commands/smoke.js');
    const machine = vmChoice(o);
    const status = intFlag(o.waitHttpStatus, '--wait-http-status');
    const request: RunRequest = {
      from: o.from, ...(o.name ? { name: o.name } : {}), ...(o.vmlinuxId ? { vmlinuxId: o.vmlinuxId } : {}),
      memMib: intFlag(o.mem, '--mem'), cpus: intFlag(o.cpu, '--cpu'), ...(o.hostname ? { hostname: o.hostname } : {}),
      env: o.env ?? [], envFiles: o.envFile ?? [], ...(o.sshUser ? { sshUser: o.sshUser } : {}), ...(o.identityFile ? { identityFile: o.identityFile } : {}),
      ports: o.port ?? [], accel: o.accel, ...(command.length ? { command } : {}),
      bootTimeoutMs: seconds(o.bootTimeout, '--boot-timeout'), init: o.init as 'firebuild' | 'image',
      machine, ...(o.ipAddress ? { ipAddress: o.ipAddress } : {}),
      probes: {
        tcp: (o.waitTcp ?? []).map((p) => parseProbePort(p, '--wait-tcp')),
        http: (o.waitHttp ?? []).map((url) => ({ url, status, ...(o.waitHttpBody ? { body: o.waitHttpBody } : {}) })),
        ...(o.waitExitCode !== undefined ? { exitCode: intFlag(o.waitExitCode, '--wait-exit-code') } : {}),
        timeoutMs: seconds(o.waitTimeout, '--wait-timeout'),
      },
      daemonize: o.daemonize ?? false,
    };
    const env = await ctx.load(o);
    const { runCommand } = await import('../../commands/run.js');
    // Foreground: the console goes to stdout as it is written; a non-zero exit of the command is an error carrying its code.
    const r = await runCommand(request, env, ctx.logger.child('run'), out);
    if (!o.daemonize) return;
    if (r.mode === 'exit-code') out(json({ 'vmm-id': r.vm.id, name: r.vm.name, 'exit-code': r.exitCode }));
    if (r.mode === 'daemonized') out(json({ 'vmm-id': r.vm.id, name: r.vm.name, pid: r.vm.pid, 'ip-address': r.vm.network.ip ?? null, 'cache-dir': r.vm.cacheDir, 'serial-log': r.vm.serialLog }));
  });

  withProfileOptions(program.command('ls').description('list VMs').option('--json', 'print JSON'), ctx.env, { runtime: true })
    .action(async (o: SettingsCliOpts & { json?: boolean }) => {
      const { settings } = await ctx.load(o);
      const { vmList } = await import('../../commands/vm.js');
      const vms = await vmList(settings);
      if (o.json) return out(json(vms));
      out(table(['ID', 'NAME', 'IMAGE', 'RUNNING', 'PID', 'IP', 'STARTED'], vms.map((v) => [v.id, v.name, v.image, v.running ? 'yes' : 'no', String(v.pid), v.network.ip ?? '-', v.started])));
    });
  withProfileOptions(program.command('inspect').description('print a VM as JSON').requiredOption('--vmm-id <id>', 'the VM'), ctx.env, { runtime: true })
    .action(async (o: SettingsCliOpts & { vmmId: string }) => {
      const { settings } = await ctx.load(o);
      const { vmInspect } = await import('../../commands/vm.js');
      out(json(await vmInspect(settings, o.vmmId)));
    });
  withProfileOptions(program.command('logs').description("print a VM's console").requiredOption('--vmm-id <id>', 'the VM').option('--follow', 'keep printing until the VM ends'), ctx.env, { runtime: true })
    .action(async (o: SettingsCliOpts & { vmmId: string; follow?: boolean }) => {
      const { settings } = await ctx.load(o);
      const { vmLogs } = await import('../../commands/vm.js');
      for await (const chunk of vmLogs(settings, o.vmmId, { follow: o.follow ?? false })) out(chunk);
    });
  withProfileOptions(program.command('kill').description('stop a VM and remove everything it left').requiredOption('--vmm-id <id>', 'the VM').option('--shutdown-timeout <seconds>', 'wait this long before forcing', '10'), ctx.env, { runtime: true })
    .action(async (o: SettingsCliOpts & { vmmId: string; shutdownTimeout: string }) => {
      const timeoutMs = seconds(o.shutdownTimeout, '--shutdown-timeout');
      const { settings } = await ctx.load(o);
      const { vmKill } = await import('../../commands/vm.js');
      await vmKill(settings, o.vmmId, timeoutMs, ctx.logger.child('kill'));
    });
  withProfileOptions(program.command('purge').description('remove every VM whose process is gone')
    .option('--all', "also stop and remove what still runs: every VM (build VMs included), every build and its work dir, of this user (the runner's job hooks)")
    .option('--grace <seconds>', 'with --all: how long a running build has to clean up after SIGTERM before SIGKILL', '10'), ctx.env, { runtime: true })
    .action(async (o: SettingsCliOpts & { all?: boolean; grace: string }) => {
      const graceMs = seconds(o.grace, '--grace');
      const { settings } = await ctx.load(o);
      const { vmPurge } = await import('../../commands/vm.js');
      const ids = await vmPurge(settings, ctx.logger.child('purge'), { all: o.all ?? false, graceMs });
      out(ids.map((i) => `${i}\n`).join(''));
    });
}
