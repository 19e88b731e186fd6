import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { getOctokit } from '@actions/github';
import { UserError } from '../../util/errors.js';

/**
 * The release target: the packaged files as assets of the GitHub release for `tag` (created when
 * missing). An asset name already in the release is an error unless `overwrite`, which replaces it.
 */
export interface ReleaseTarget {
  token: string;
  repository: string;
  tag: string;
  files: string[];
  overwrite: boolean;
  apiUrl?: string;
}

export async function publishRelease(t: ReleaseTarget): Promise<{ url: string; assets: string[] }> {
  const [owner, repo] = t.repository.split('/') as [string, string];
  if (!owner || !repo) throw new UserError(`GITHUB_REPOSITORY '${t.repository}' is not owner/repo`);
  if (!t.token) throw new UserError("input 'github-token' is required for the release target: pass ${{ github.token }} with contents: write");
  const gh = getOctokit(t.token, t.apiUrl ? { baseUrl: t.apiUrl } : {});
  let release: { id: number; html_url: string; upload_url: string; assets: { id: number; name: string }[] };
  try {
    release = (await gh.rest.repos.getReleaseByTag({ owner, repo, tag: t.tag })).data;
  } catch (err) {
    if ((err as { status?: number }).status !== 404) throw new UserError(`cannot read the release ${t.tag} of ${t.repository}: ${(err as Error).message}`);
    release = { ...(await gh.rest.repos.createRelease({ owner, repo, tag_name: t.tag, name: t.tag })).data, assets: [] };
  }
  const names = t.files.map((f) => path.basename(f));
  const taken = release.assets.filter((a) => names.includes(a.name));
  if (taken.length && !t.overwrite) throw new UserError(`release ${t.tag} already has ${taken.map((a) => a.name).join(', ')}: set overwrite: true to replace them`);
  for (const a of taken) await gh.rest.repos.deleteReleaseAsset({ owner, repo, asset_id: a.id });
  const assets: string[] = [];
  for (const f of t.files) {
    const data = await fsp.readFile(f);
    const r = await gh.rest.repos.uploadReleaseAsset({
      owner, repo, release_id: release.id, name: path.basename(f), url: release.upload_url,
      data: data as unknown as string,
      headers: { 'content-type': 'application/octet-stream', 'content-length': data.length },
    });
    assets.push(r.data.browser_download_url);
  }
  return { url: release.html_url, assets };
}
