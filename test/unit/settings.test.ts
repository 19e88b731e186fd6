import { describe, expect, test } from '@jest/globals';
import { PROFILE_SCHEMA_VERSION, profileFromSettings, type Profile } from '../../src/profile/profile.js';
import { builtinDefaults, checkChrootBase, parseInt64Properties, parseRegistryMirrors, parseStringProperties, resolveSettings } from '../../src/profile/settings.js';
import { UserError } from '../../src/util/errors.js';
import { jailerSocketPath, jailerSocketPathLength, MAX_SOCKET_PATH, VMM_ID_LENGTH } from '../../src/vmm/jail-paths.js';

const defaults = builtinDefaults({ FIREBUILD_HOME: '/def' });

const profile: Profile = {
  'schema-version': PROFILE_SCHEMA_VERSION,
  name: 'p',
  'binary-firecracker': '/prof/firecracker',
  'chroot-base': '/prof/jail',
  'run-cache': '/prof/run',
  'storage-provider': 'directory',
  'storage-provider-property-string': { 'rootfs-storage-root': '/prof/rootfs' },
  'storage-provider-property-int64': { 'max-size': 5 },
  'tracing-enable': true,
  'tracing-collector-host-port': '10.0.0.1:6831',
  'tracing-log-enable': false,
};

describe('settings precedence: flag > profile > built-in default', () => {
  test('no flags, no profile: built-in defaults', () => {
    const s = resolveSettings({}, undefined, defaults);
    expect(s.runCache).toBe('/def/run');
    expect(s.storageProperties).toEqual({ 'rootfs-storage-root': '/def/rootfs', 'kernel-storage-root': '/def/kernels' });
    expect(s.binaryFirecracker).toBeUndefined();
    expect(s.origin['run-cache']).toBe('default');
  });

  test('profile beats default, key by key for storage properties', () => {
    const s = resolveSettings({}, profile, defaults);
    expect(s.runCache).toBe('/prof/run');
    expect(s.chrootBase).toBe('/prof/jail');
    expect(s.binaryFirecracker).toBe('/prof/firecracker');
    expect(s.storageProperties).toEqual({ 'rootfs-storage-root': '/prof/rootfs', 'kernel-storage-root': '/def/kernels' });
    expect(s.storagePropertiesInt64).toEqual({ 'max-size': 5 });
    expect(s.tracingEnable).toBe(true);
    expect(s.origin).toMatchObject({ 'run-cache': 'profile', 'storage-provider-property-string.kernel-storage-root': 'default' });
  });

  test.each([
    ['runCache', { runCache: '/flag/run' }, (s: ReturnType<typeof resolveSettings>) => s.runCache, '/flag/run'],
    ['chrootBase', { chrootBase: '/flag/jail' }, (s: ReturnType<typeof resolveSettings>) => s.chrootBase, '/flag/jail'],
    ['binaryFirecracker', { binaryFirecracker: '/flag/fc' }, (s: ReturnType<typeof resolveSettings>) => s.binaryFirecracker, '/flag/fc'],
    ['tracingEnable=false', { tracingEnable: false }, (s: ReturnType<typeof resolveSettings>) => s.tracingEnable, false],
    ['rootfs root', { storageProviderPropertyString: ['rootfs-storage-root=/flag/rootfs'] }, (s: ReturnType<typeof resolveSettings>) => s.storageProperties['rootfs-storage-root'], '/flag/rootfs'],
    ['int64', { storageProviderPropertyInt64: ['max-size=7'] }, (s: ReturnType<typeof resolveSettings>) => s.storagePropertiesInt64['max-size'], 7],
  ])('a flag beats the profile: %s', (_name, flags, get, want) => {
    const s = resolveSettings(flags, profile, defaults);
    expect(get(s)).toBe(want);
  });
});

describe('storage provider properties', () => {
  test('key=value pairs, the value may contain =', () => {
    expect(parseStringProperties(['a=1', 'b=x=y'])).toEqual({ a: '1', b: 'x=y' });
    expect(parseInt64Properties(['n=-12'])).toEqual({ n: -12 });
  });
  test.each(['novalue', '=x', 'k=', ' k=v', 'k v=1'])('malformed string property %j', (kv) => {
    expect(() => parseStringProperties([kv])).toThrow(/malformed --storage-provider-property-string .*use key=value/);
  });
  test.each(['n=1.5', 'n=abc', 'n=99999999999999999999'])('malformed int64 property %j', (kv) => {
    expect(() => parseInt64Properties([kv])).toThrow(/must be an integer/);
  });
});

describe('the jailer socket path must fit the kernel limit', () => {
  test('path shape, computed from the binary name and the id length', () => {
    expect(jailerSocketPath('/srv/jailer/', '/opt/fc/firecracker-v1.7', 'abc')).toBe('/srv/jailer/firecracker-v1.7/abc/root/run/firecracker.socket');
    expect(jailerSocketPathLength('/srv/jailer', undefined)).toBe('/srv/jailer/firecracker/'.length + VMM_ID_LENGTH + '/root/run/firecracker.socket'.length);
  });

  test('the longest base that fits passes; one more character fails with the computed length', () => {
    const fixed = jailerSocketPathLength('', undefined);
    const longest = '/' + 'a'.repeat(MAX_SOCKET_PATH - fixed - 1);
    expect(() => checkChrootBase(longest, undefined)).not.toThrow();
    const tooLong = longest + 'b';
    expect(() => checkChrootBase(tooLong, undefined)).toThrow(UserError);
    expect(() => checkChrootBase(tooLong, undefined)).toThrow(`would be ${MAX_SOCKET_PATH + 1} characters`);
  });

  test('a longer binary name shortens the room for the base', () => {
    const base = '/' + 'a'.repeat(MAX_SOCKET_PATH - jailerSocketPathLength('', undefined) - 1);
    expect(() => checkChrootBase(base, '/usr/bin/firecracker-1.10.1')).toThrow(/would be \d+ characters/);
  });
});

describe('registry-mirrors: --registry-mirror > the profile > FIREBUILD_REGISTRY_MIRRORS > none', () => {
  const envDefaults = builtinDefaults({ FIREBUILD_HOME: '/def', FIREBUILD_REGISTRY_MIRRORS: ' https://env.example , http://127.0.0.1:5000/ ,' });
  const withMirrors: Profile = { ...profile, 'registry-mirrors': ['https://prof.example:8443'] };

  test('none set: none', () => {
    const s = resolveSettings({}, undefined, defaults);
    expect(s.registryMirrors).toEqual([]);
    expect(profileFromSettings('p', s)['registry-mirrors']).toBeUndefined();
  });
  test('the environment, comma separated, is the default (and is not written into a profile)', () => {
    const s = resolveSettings({}, profile, envDefaults);
    expect(s.registryMirrors).toEqual(['https://env.example', 'http://127.0.0.1:5000']);
    expect(s.origin['registry-mirrors']).toBe('default');
    expect(profileFromSettings('p', s)['registry-mirrors']).toBeUndefined();
  });
  test('the profile beats the environment', () => {
    const s = resolveSettings({}, withMirrors, envDefaults);
    expect(s.registryMirrors).toEqual(['https://prof.example:8443']);
    expect(s.origin['registry-mirrors']).toBe('profile');
  });
  test('flags beat both, in the order given, duplicates dropped; profile-create keeps them', () => {
    const s = resolveSettings({ registryMirror: ['http://b.example', 'https://a.example/', 'http://b.example'] }, withMirrors, envDefaults);
    expect(s.registryMirrors).toEqual(['http://b.example', 'https://a.example']);
    expect(s.origin['registry-mirrors']).toBe('flag');
    expect(profileFromSettings('p', s)['registry-mirrors']).toEqual(['http://b.example', 'https://a.example']);
  });
  test.each(['127.0.0.1:5000', 'ftp://m.example', 'https://m.example/v2/', 'https://u:p@m.example', 'https://m.example?x=1', 'http://'])('malformed mirror %j: one line naming where it came from', (m) => {
    expect(() => parseRegistryMirrors([m])).toThrow(UserError);
    expect(() => parseRegistryMirrors([m])).toThrow(/malformed registry mirror .*\(--registry-mirror\): give http\(s\):\/\/host\[:port\]/);
    expect(() => builtinDefaults({ FIREBUILD_REGISTRY_MIRRORS: m })).toThrow(/\(FIREBUILD_REGISTRY_MIRRORS\)/);
  });
});
