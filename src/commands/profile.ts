import type { Logger } from '../util/logger.js';
import { ProfileStore, profileFromSettings, validateProfileName, type Profile } from '../profile/profile.js';
import { resolveSettings, validateForProfile, type SettingsFlags } from '../profile/settings.js';

export interface ProfileCreateOptions {
  name: string;
  profileConfDir: string;
  flags: SettingsFlags;
  overwrite?: boolean;
}

/** `profile-create`: validate everything first, then write; bad input changes nothing on disk. */
export async function profileCreate(opts: ProfileCreateOptions, log: Logger): Promise<{ file: string; profile: Profile }> {
  validateProfileName(opts.name);
  const store = new ProfileStore(opts.profileConfDir);
  await store.ensureWritable();
  const settings = resolveSettings(opts.flags, undefined);
  await validateForProfile(settings);
  const profile = profileFromSettings(opts.name, settings);
  const file = await store.write(profile, { overwrite: opts.overwrite ?? false });
  log.info('profile written', { profile: opts.name, file });
  return { file, profile };
}

export async function profileList(profileConfDir: string): Promise<string[]> {
  return ProfileStore.forReading(profileConfDir).list();
}

export async function profileInspect(name: string, profileConfDir: string): Promise<Profile> {
  return ProfileStore.forReading(profileConfDir).read(validateProfileName(name));
}
