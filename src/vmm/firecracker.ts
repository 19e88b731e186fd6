import * as path from 'node:path';

/**
 * Firecracker's configuration, as a `--config-file` JSON (`FullVmConfiguration`: kebab-case top-level
 * keys, snake_case fields) or as the bodies of API requests over its socket. Built by pure functions from
 * typed options; tests validate every shape against the official API schema.
 */
export interface FirecrackerVm {
  kernel: string;
  initrd?: string;
  bootArgs: string;
  rootfs: string;
  /** Extra drives (a config disk, for example). */
  drives?: { id: string; path: string; readOnly: boolean }[];
  vcpus: number;
  memMib: number;
  network?: { ifaceId: string; tap: string; mac?: string }[];
  /** Expose the run metadata through MMDS (V2) on the first interface. */
  mmds?: boolean;
  logPath?: string;
  metricsPath?: string;
  /** API mode only: where Firecracker writes the guest's serial console (`PUT /serial`). */
  serialOut?: string;
  /** A vsock device: the guest's CID, and the host socket (in the jail) whose `<udsPath>_<port>` take the guest's connections. */
  vsock?: { guestCid: number; udsPath: string };
}

/** The guest's vsock CID (the host is CID 2). */
export const GUEST_CID = 3;
/** The vsock device's host socket, in the jail: the guest's connections to port P reach `<VSOCK_UDS>_P`. */
export const VSOCK_UDS = '/vsock.sock';

export interface ApiRequest {
  method: 'PUT' | 'PATCH' | 'GET';
  path: string;
  /** The schema definition the body must satisfy. */
  definition: string;
  body: Record<string, unknown>;
}

function bootSource(vm: FirecrackerVm): Record<string, unknown> {
  return { kernel_image_path: vm.kernel, boot_args: vm.bootArgs, ...(vm.initrd ? { initrd_path: vm.initrd } : {}) };
}

function drives(vm: FirecrackerVm): Record<string, unknown>[] {
  return [
    { drive_id: 'rootfs', path_on_host: vm.rootfs, is_root_device: true, is_read_only: false, cache_type: 'Unsafe', io_engine: 'Sync' },
    ...(vm.drives ?? []).map((d) => ({ drive_id: d.id, path_on_host: d.path, is_root_device: false, is_read_only: d.readOnly })),
  ];
}

function interfaces(vm: FirecrackerVm): Record<string, unknown>[] {
  return (vm.network ?? []).map((n) => ({ iface_id: n.ifaceId, host_dev_name: n.tap, ...(n.mac ? { guest_mac: n.mac } : {}) }));
}

function machine(vm: FirecrackerVm): Record<string, unknown> {
  return { vcpu_count: vm.vcpus, mem_size_mib: vm.memMib, smt: false };
}

function vsock(v: { guestCid: number; udsPath: string }): Record<string, unknown> {
  return { guest_cid: v.guestCid, uds_path: v.udsPath };
}

/** The `--config-file` JSON. */
export function configFile(vm: FirecrackerVm): Record<string, unknown> {
  const cfg: Record<string, unknown> = {
    'boot-source': bootSource(vm),
    drives: drives(vm),
    'machine-config': machine(vm),
    'network-interfaces': interfaces(vm),
  };
  if (vm.mmds && vm.network?.length) cfg['mmds-config'] = { version: 'V2', network_interfaces: [vm.network[0]!.ifaceId] };
  if (vm.logPath) cfg.logger = { log_path: vm.logPath, level: 'Info', show_level: true, show_log_origin: false };
  if (vm.metricsPath) cfg.metrics = { metrics_path: vm.metricsPath };
  if (vm.vsock) cfg.vsock = vsock(vm.vsock);
  return cfg;
}

/** The same configuration as API requests, in the order Firecracker needs them, ending with InstanceStart. */
export function apiRequests(vm: FirecrackerVm, metadata?: Record<string, unknown>): ApiRequest[] {
  const reqs: ApiRequest[] = [];
  if (vm.logPath) reqs.push({ method: 'PUT', path: '/logger', definition: 'Logger', body: { log_path: vm.logPath, level: 'Info', show_level: true, show_log_origin: false } });
  if (vm.metricsPath) reqs.push({ method: 'PUT', path: '/metrics', definition: 'Metrics', body: { metrics_path: vm.metricsPath } });
  if (vm.serialOut) reqs.push({ method: 'PUT', path: '/serial', definition: 'SerialDevice', body: { serial_out_path: vm.serialOut } });
  reqs.push({ method: 'PUT', path: '/machine-config', definition: 'MachineConfiguration', body: machine(vm) });
  reqs.push({ method: 'PUT', path: '/boot-source', definition: 'BootSource', body: bootSource(vm) });
  for (const d of drives(vm)) reqs.push({ method: 'PUT', path: `/drives/${d.drive_id as string}`, definition: 'Drive', body: d });
  for (const n of interfaces(vm)) reqs.push({ method: 'PUT', path: `/network-interfaces/${n.iface_id as string}`, definition: 'NetworkInterface', body: n });
  if (vm.vsock) reqs.push({ method: 'PUT', path: '/vsock', definition: 'Vsock', body: vsock(vm.vsock) });
  if (vm.mmds && vm.network?.length) {
    reqs.push({ method: 'PUT', path: '/mmds/config', definition: 'MmdsConfig', body: { version: 'V2', network_interfaces: [vm.network[0]!.ifaceId] } });
    if (metadata) reqs.push({ method: 'PUT', path: '/mmds', definition: 'MmdsContentsObject', body: metadata });
  }
  reqs.push({ method: 'PUT', path: '/actions', definition: 'InstanceActionInfo', body: { action_type: 'InstanceStart' } });
  return reqs;
}

/** Graceful stop: Ctrl+Alt+Del to the guest (x86). */
export function stopRequest(): ApiRequest {
  return { method: 'PUT', path: '/actions', definition: 'InstanceActionInfo', body: { action_type: 'SendCtrlAltDel' } };
}

export interface JailerOptions {
  jailer: string;
  firecracker: string;
  id: string;
  uid: number;
  gid: number;
  chrootBase: string;
  /** Path of the network namespace (`/var/run/netns/NAME`). */
  netns?: string;
  /** cgroup v2 parent under which the jailer makes the VM's own cgroup (so `cgroup.kill` reaps it). */
  parentCgroup?: string;
  /** setsid() and stdio to /dev/null: the console then needs the API's `PUT /serial`. */
  daemonize?: boolean;
  /** Exec Firecracker in a new PID namespace; the jailer writes its host pid to `<jail root>/firecracker.pid`. */
  newPidNs?: boolean;
  /** `--cgroup file=value` settings for the VM's cgroup. */
  cgroups?: string[];
  /** Firecracker's own arguments after `--`: a config file inside the jail, or the API socket. */
  configFile?: string;
  apiSock?: string;
}

/** The jailer's argv (a pure function; tested as a table). */
export function jailerArgv(o: JailerOptions): string[] {
  if (!/^[a-zA-Z0-9-]{1,64}$/.test(o.id)) throw new Error(`jailer id ${o.id} must be 1-64 of [a-zA-Z0-9-]`);
  return [
    '--id', o.id,
    '--exec-file', o.firecracker,
    '--uid', String(o.uid),
    '--gid', String(o.gid),
    '--chroot-base-dir', o.chrootBase,
    ...(o.netns ? ['--netns', o.netns] : []),
    '--cgroup-version', '2',
    ...(o.parentCgroup ? ['--parent-cgroup', o.parentCgroup] : []),
    ...(o.cgroups ?? []).flatMap((c) => ['--cgroup', c]),
    ...(o.daemonize ? ['--daemonize'] : []),
    ...(o.newPidNs ? ['--new-pid-ns'] : []),
    '--',
    ...(o.configFile ? ['--config-file', o.configFile] : []),
    ...(o.apiSock ? ['--api-sock', o.apiSock] : []),
  ];
}

/** The jail's root: `<chroot-base>/<firecracker binary name>/<id>/root`. */
export function jailRoot(chrootBase: string, firecracker: string, id: string): string {
  return path.join(chrootBase, path.basename(firecracker), id, 'root');
}
