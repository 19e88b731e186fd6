import { z } from 'zod';

/** A COPY/ADD source as resolved from the build context (or a URL, heredoc, stage or image): what the plan records and the engines fetch. */
export const ResourceSchema = z.object({
  /** The source as written after expansion. */
  source: z.string(),
  kind: z.enum(['file', 'dir', 'symlink', 'url', 'heredoc', 'stage', 'image']),
  /** Path relative to the context root (local and http contexts), or the path inside a stage/image. */
  path: z.string().optional(),
  url: z.string().optional(),
  /** sha256 of the content (file, url, heredoc) or of the tree listing (dir). Absent for stage/image. */
  sha256: z.string().regex(/^[a-f0-9]{64}$/).optional(),
  size: z.number().int().nonnegative().optional(),
  /** Unix mode bits (local files and dirs; http contexts carry no modes). */
  mode: z.number().int().optional(),
  files: z.number().int().nonnegative().optional(),
  linkTarget: z.string().optional(),
  /** For kind stage: the index of the stage; for image: the reference. */
  stage: z.number().int().nonnegative().optional(),
  image: z.string().optional(),
  /** ADD extracts local tar archives. */
  extract: z.boolean().optional(),
});
export type Resource = z.infer<typeof ResourceSchema>;
