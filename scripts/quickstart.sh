#!/usr/bin/env bash
# The README's first command: set up this host and run firebuild's main job end to end, as far as the
# product goes today: host check, offline base image, guest kernel, and the example Dockerfile built into
# a tagged ext4 root file system, booted as a microVM and smoke-tested over HTTP, then removed. Run from
# the repository as root (or with sudo available).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
npm ci --no-audit --no-fund --loglevel=error
fb() { ./bin/firebuild.js "$@"; }

echo "== host check"
fb doctor

echo "== offline Debian base image (debian:bookworm-slim in Docker and the local registry)"
bash scripts/make-base-image.sh >/dev/null

echo "== guest kernel: firebuild's fast kernel (built once from Debian's linux-source-6.1, then kept in the cache)"
# A few minutes the first time on 2 cores; later runs only repeat make's up-to-date check. Debian's cloud
# kernel (with its initrd, about 5 s slower per boot under TCG) is the fallback where no source is installed.
if [ -e /usr/src/linux-source-6.1.tar.xz ]; then
  fb kernel build --version 6.1 --overwrite >/dev/null
else
  echo "no /usr/src/linux-source-6.1.tar.xz: falling back to Debian's cloud kernel"
  vmlinuz=$(ls /boot/vmlinuz-*cloud* | sort | tail -n1)
  fb kernel import --id default --overwrite "$vmlinuz" --initrd "${vmlinuz/vmlinuz/initrd.img}" >/dev/null
fi
fb kernel ls

echo "== build the example service (examples/hello) into a tagged rootfs with the vm engine (its RUN runs in a build microVM, never on this host)"
fb rootfs --dockerfile examples/hello/Dockerfile --tag examples/hello:1 --overwrite
fb image inspect examples/hello:1 >/dev/null && echo "examples/hello:1 stored (firebuild image inspect examples/hello:1 shows its metadata)"

echo "== image store"
fb image ls

echo "== boot it as a microVM (QEMU; TCG where KVM is unusable) and smoke-test it over a published port"
port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
vm=$(fb run --from examples/hello:1 --name quickstart --port "127.0.0.1:$port:8080" --env GREETING=hi --daemonize \
  --wait-http "http://127.0.0.1:$port/cgi-bin/index.cgi" --wait-http-body "hi from quickstart")
echo "$vm"
id=$(printf '%s' "$vm" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s)["vmm-id"]))')
trap 'fb kill --vmm-id "$id" >/dev/null 2>&1 || true' EXIT
echo "GET http://127.0.0.1:$port/cgi-bin/index.cgi -> $(curl -fsS "http://127.0.0.1:$port/cgi-bin/index.cgi")"
fb ls
fb kill --vmm-id "$id"
trap - EXIT
echo "quickstart: done"
