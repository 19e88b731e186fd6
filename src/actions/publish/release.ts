import { getOctokit } from '@actions/github';
import { publishRelease as publishToRelease, type Release, type ReleaseApi } from '../../commands/publish.js';
import { UserError } from '../../util/errors.js';

/** The release target's inputs: the GitHub repository and token, the release's tag, the packaged files. */
export interface ReleaseTarget {
  token: string;
  repository: string;
  tag: string;
  files: string[];
  overwrite: boolean;
  apiUrl?: string;
}

/** The release target through GitHub's API (commands/publish.ts has what it does). */
export async function publishRelease(t: ReleaseTarget): Promise<{ url: string; assets: string[] }> {
  const [owner, repo] = t.repository.split('/') as [string, string];
  if (!owner || !repo) throw new UserError(`GITHUB_REPOSITORY '${t.repository}' is not owner/repo`);
  if (!t.token) throw new UserError("input 'github-token' is required for the release target: pass ${{ github.token }} with contents: write");
  return publishToRelease(githubReleases(t.token, owner, repo, t.apiUrl), t);
}

function githubReleases(token: string, owner: string, repo: string, apiUrl: string | undefined): ReleaseApi {
  const gh = getOctokit(token, apiUrl ? { baseUrl: apiUrl } : {});
  const release = (r: { id: number; html_url: string; upload_url: string }, assets: { id: number; name: string }[]): Release => ({ id: r.id, url: r.html_url, uploadUrl: r.upload_url, assets });
  return {
    find: async (tag) => {
      try {
        const r = (await gh.rest.repos.getReleaseByTag({ owner, repo, tag })).data;
        return release(r, r.assets.map((a) => ({ id: a.id, name: a.name })));
      } catch (err) {
        if ((err as { status?: number }).status === 404) return undefined;
        throw err;
      }
    },
    create: async (tag) => release((await gh.rest.repos.createRelease({ owner, repo, tag_name: tag, name: tag })).data, []),
    deleteAsset: async (id) => void (await gh.rest.repos.deleteReleaseAsset({ owner, repo, asset_id: id })),
    upload: async (r, name, data) => (await gh.rest.repos.uploadReleaseAsset({
      owner, repo, release_id: r.id, name, url: r.uploadUrl,
      data: data as unknown as string,
      headers: { 'content-type': 'application/octet-stream', 'content-length': data.length },
    })).data.browser_download_url,
  };
}
