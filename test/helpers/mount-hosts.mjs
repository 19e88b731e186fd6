// Preloaded (node --import) into an action run inside `unshare --mount`: bind-mounts the test's hosts
// file over /etc/hosts in that private mount namespace before the action starts. Not done in a shell:
// sh drops variables whose names are not identifiers, such as the runner's INPUT_OCI-REF.
import { execFileSync } from 'node:child_process';

if (process.env.FIREBUILD_TEST_HOSTS) execFileSync('mount', ['--bind', process.env.FIREBUILD_TEST_HOSTS, '/etc/hosts']);
