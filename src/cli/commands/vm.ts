import type { Command } from 'commander';
import { UserError } from '../../util/errors.js';
import { json, table } from '../format.js';
import { collect, intFlag, Option, seconds, vmSettings, withProfileOptions, withVmOptions, type CliContext, type SettingsCliOpts, type VmCliOpts } from '../options.js';

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
      .option('--port <[hostip:]hostport:guestport[/proto]>', 'publish a guest port, repeatable (user networking: host side 127.0.0.1 by default; CNI: iptables DNAT, every local address by default)', collect)
      .addOption(new Option('--init <init>', "PID 1: firebuild's init runs the command; image hands over to the image's /sbin/init after the setup").choices(['firebuild', 'image']).default('firebuild'))
      .option('--daemonize', 'return once the VM is up, printing one JSON object')
      .option('--boot-timeout <seconds>', 'deadline for the init to start the command', '120')
      .option('--wait-tcp <port>', 'probe: a published host port must accept connections, repeatable', collect)
      .option('--wait-http <url>', 'probe: an HTTP GET must answer --wait-http-status, repeatable', collect)
      .option('--wait-http-status <code>', 'expected HTTP status', '200')
      .option('--wait-http-body <text>', 'expected substring of the HTTP body')
      .option('--wait-exit-code <n>', 'probe: the command must exit with this code before --wait-timeout (then the VM is removed)')
      .option('--wait-timeout <seconds>', 'deadline for the probes', '60'), false),
    ctx.env,
    { runtime: true },
  ).action(async (command: string[], o: RunCli) => {
    const { settings, storage } = await ctx.load(o);
    const [{ DEFAULT_LOCK_DIR, disownVm, exitCodeOf, followConsole, killVm, runVm, teardown, vmDiskFull }, { RunCache, vmmOf }, { runProbes, waitExitCode }] = await Promise.all([
      import('../../commands/run.js'), import('../../runtime/state.js'), import('../../runtime/probes.js'),
    ]);
    const cache = new RunCache(settings.runCache);
    const log = ctx.logger.child('run');
    if (o.ipAddress && !o.cniNetworkName) throw new UserError('--ip-address needs --cni-network-name');
    const vm = await vmSettings(o, settings);
    const state = await runVm({
      from: o.from, ...(o.name ? { name: o.name } : {}), ...(o.vmlinuxId ? { vmlinuxId: o.vmlinuxId } : {}),
      memMib: Number(o.mem), cpus: Number(o.cpu), ...(o.hostname ? { hostname: o.hostname } : {}),
      env: o.env ?? [], envFiles: o.envFile ?? [], ...(o.sshUser ? { sshUser: o.sshUser } : {}), ...(o.identityFile ? { identityFile: o.identityFile } : {}),
      ports: o.port ?? [], accel: o.accel, ...(command.length ? { command } : {}),
      bootTimeoutMs: seconds(o.bootTimeout, '--boot-timeout'), init: o.init as 'firebuild' | 'image',
      ...vm, ...(vm.cni ? { cni: { ...vm.cni, ...(o.ipAddress ? { ip: o.ipAddress } : {}) } } : {}),
    }, storage, cache, log);
    const probes = { tcp: (o.waitTcp ?? []).map((p) => ({ host: '127.0.0.1', port: Number(p) })), http: (o.waitHttp ?? []).map((url) => ({ url, status: Number(o.waitHttpStatus), ...(o.waitHttpBody ? { body: o.waitHttpBody } : {}) })), timeoutMs: seconds(o.waitTimeout, '--wait-timeout') };
    if (probes.tcp.length || probes.http.length) {
      try {
        await runProbes(probes, state.serialLog);
        log.info('probes passed', { tcp: probes.tcp.length, http: probes.http.length });
      } catch (err) {
        await killVm(cache, state.id, 5000, log);
        throw err;
      }
    }
    if (o.waitExitCode !== undefined) {
      const want = intFlag(o.waitExitCode, '--wait-exit-code');
      try {
        await waitExitCode(state.serialLog, vmmOf(state), want, probes.timeoutMs);
        log.info('exit code probe passed', { 'exit-code': want });
      } finally {
        await killVm(cache, state.id, 5000, log);
      }
      if (o.daemonize) out(json({ 'vmm-id': state.id, name: state.name, 'exit-code': want }));
      return;
    }
    if (o.daemonize) {
      // The VM outlives this process from here: a signal no longer tears it down.
      disownVm(state.id);
      out(json({ 'vmm-id': state.id, name: state.name, pid: state.pid, 'ip-address': state.network.ip ?? null, 'cache-dir': state.cacheDir, 'serial-log': state.serialLog }));
      return;
    }
    // Foreground: stream the console until the VM ends. Ctrl-C (SIGINT) or SIGTERM: the process's cancel
    // handlers (bin/firebuild.js) tear the VM down, as they do during the boot, and exit 130/143.
    let text = '';
    for await (const chunk of followConsole(state.serialLog, vmmOf(state))) {
      out(chunk);
      text += chunk;
    }
    const exit = exitCodeOf(text);
    // A command that failed on a full host disk (QEMU hands the write error to the guest): say so.
    const full = exit === 0 ? undefined : await vmDiskFull(state);
    // The VM ended: everything it had on the host goes (cgroup, netns, CNI, port rules, jail, run cache), as kill does.
    await teardown(cache, state, DEFAULT_LOCK_DIR, log).catch(() => undefined);
    if (full) throw full;
    // The image's own init powers off without firebuild's exit line.
    if (exit === undefined && o.init === 'image') return;
    if (exit === undefined) throw new UserError('the VM ended without reporting an exit code (a crash or a kill)');
    if (exit !== 0) throw Object.assign(new UserError(`the command exited with code ${exit}`), { exitCode: exit });
  });

  withProfileOptions(program.command('ls').description('list VMs').option('--json', 'print JSON'), ctx.env, { runtime: true })
    .action(async (o: SettingsCliOpts & { json?: boolean }) => {
      const { settings } = await ctx.load(o);
      const { RunCache } = await import('../../runtime/state.js');
      const vms = await new RunCache(settings.runCache).list();
      if (o.json) return out(json(vms));
      out(table(['ID', 'NAME', 'IMAGE', 'RUNNING', 'PID', 'IP', 'STARTED'], vms.map((v) => [v.id, v.name, v.image, v.running ? 'yes' : 'no', String(v.pid), v.network.ip ?? '-', v.started])));
    });
  withProfileOptions(program.command('inspect').description('print a VM as JSON').requiredOption('--vmm-id <id>', 'the VM'), ctx.env, { runtime: true })
    .action(async (o: SettingsCliOpts & { vmmId: string }) => {
      const { settings } = await ctx.load(o);
      const [{ inspectView }, { RunCache, vmRunning }] = await Promise.all([import('../../commands/run.js'), import('../../runtime/state.js')]);
      const s = await new RunCache(settings.runCache).read(o.vmmId);
      out(json(inspectView({ ...s, running: vmRunning(s) })));
    });
  withProfileOptions(program.command('logs').description("print a VM's console").requiredOption('--vmm-id <id>', 'the VM').option('--follow', 'keep printing until the VM ends'), ctx.env, { runtime: true })
    .action(async (o: SettingsCliOpts & { vmmId: string; follow?: boolean }) => {
      const { settings } = await ctx.load(o);
      const [{ RunCache, vmmOf }, { followConsole, readConsole }] = await Promise.all([import('../../runtime/state.js'), import('../../commands/run.js')]);
      const s = await new RunCache(settings.runCache).read(o.vmmId);
      if (!o.follow) return out(await readConsole(s.serialLog));
      for await (const chunk of followConsole(s.serialLog, vmmOf(s))) out(chunk);
    });
  withProfileOptions(program.command('kill').description('stop a VM and remove everything it left').requiredOption('--vmm-id <id>', 'the VM').option('--shutdown-timeout <seconds>', 'wait this long before forcing', '10'), ctx.env, { runtime: true })
    .action(async (o: SettingsCliOpts & { vmmId: string; shutdownTimeout: string }) => {
      const { settings } = await ctx.load(o);
      const [{ killVm }, { RunCache }] = await Promise.all([import('../../commands/run.js'), import('../../runtime/state.js')]);
      await killVm(new RunCache(settings.runCache), o.vmmId, seconds(o.shutdownTimeout, '--shutdown-timeout'), ctx.logger.child('kill'));
    });
  withProfileOptions(program.command('purge').description('remove every VM whose process is gone'), ctx.env, { runtime: true })
    .action(async (o: SettingsCliOpts) => {
      const { settings } = await ctx.load(o);
      const [{ purgeVms }, { RunCache }] = await Promise.all([import('../../commands/run.js'), import('../../runtime/state.js')]);
      const ids = await purgeVms(new RunCache(settings.runCache), ctx.logger.child('purge'));
      out(ids.map((i) => `${i}\n`).join(''));
    });
}
