import type { ImageMetadata, ImageMetadataInput, KernelMetadata } from './metadata.js';

export interface StoredImage {
  tag: string;
  dir: string;
  rootfsPath: string;
  metadataPath: string;
  metadata: ImageMetadata;
}

/** One row of `image ls`: a readable image, or one whose metadata is broken (`error` set). */
export interface ImageListEntry {
  tag: string;
  dir: string;
  metadata?: ImageMetadata;
  error?: string;
  apparentSize: number;
  allocatedSize: number;
}

export interface StagingArea {
  /** A directory on the store's file system; write rootfs.ext4 here. */
  dir: string;
  rootfsPath: string;
}

/** What a writer returns: the metadata without what the store computes itself (tag, rootfs digests). */
export type ImageMetadataDraft = Omit<ImageMetadataInput, 'schemaVersion' | 'tag' | 'rootfs' | 'created'> & {
  created?: string;
  contentSize?: number;
};

/** The kernel `run` and build VMs boot when no --vmlinux-id is given (`kernel build` stores under it). */
export const DEFAULT_KERNEL_ID = 'default';

export interface StoredKernel {
  id: string;
  dir: string;
  vmlinuxPath: string;
  initrdPath?: string;
  metadata: KernelMetadata;
}

export interface KernelListEntry {
  id: string;
  dir: string;
  metadata?: KernelMetadata;
  error?: string;
}

/**
 * The largest files root reads from a store it reads for another user (FIREBUILD_ACTING_UID, see
 * util/safe-open.ts): a larger one, such as a huge sparse file planted as a rootfs, is refused before a
 * byte is read or copied.
 */
export const ACTING_MAX_BYTES = {
  metadata: 1 << 20,
  kernel: 512 * 1024 ** 2,
  rootfs: 64 * 1024 ** 3,
} as const;

export interface StorageProvider {
  readonly name: string;
  /**
   * Set when root reads this store on behalf of that uid (firebuild-priv): every file of the store is then
   * opened without following symlinks and checked (util/safe-open.ts), and the store is never written.
   */
  readonly actingUid?: number | undefined;
  /** Human description of where things live (for doctor/inspect). */
  readonly locations: Record<string, string>;

  listImages(): Promise<ImageListEntry[]>;
  hasImage(tag: string): Promise<boolean>;
  getImage(tag: string): Promise<StoredImage>;
  /**
   * Write an image atomically: `write` fills a staging area on the same file system; the store checks
   * the metadata, fsyncs, and renames it into place under the tag's lock. A failure or a killed process
   * leaves no tag.
   */
  writeImage(tag: string, write: (staging: StagingArea) => Promise<ImageMetadataDraft>, opts?: { overwrite?: boolean }): Promise<StoredImage>;
  removeImage(tag: string): Promise<void>;

  listKernels(): Promise<KernelListEntry[]>;
  getKernel(id: string): Promise<StoredKernel>;
  importKernel(id: string, vmlinux: string, opts?: { initrd?: string; overwrite?: boolean; cmdline?: string; source?: string }): Promise<StoredKernel>;
  removeKernel(id: string): Promise<void>;
}
