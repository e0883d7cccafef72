#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Runs one command inside a throw-away soft-RoCE VM: qemu (TCG) boots the Debian kernel with a
# tiny busybox initramfs, the host root is shared read-only over 9p under a tmpfs overlay, and
# rxe0 sits on eth0 (10.0.2.15). The host has no RDMA; this is how CI runs the RDMA tests.
# Exit status: the command's own; 77 = no VM can run here (skip); 124 = timeout; 125 = VM failure.
set -euo pipefail

# modprobe lives in /usr/sbin, which a non-root PATH may lack.
PATH=$PATH:/usr/sbin:/sbin
SELF=$(readlink -f "${BASH_SOURCE[0]}")
readonly SELF
readonly PKGS=(linux-image-amd64 qemu-system-x86 busybox-static rdma-core ibverbs-utils
               ibverbs-providers iproute2 kmod cpio perftest)
# Modules the guest needs; their dependencies come from modprobe --show-depends.
readonly MODULES=(rdma_rxe rdma_ucm ib_uverbs 9p 9pnet_virtio virtio_net virtio_pci overlay)
readonly GUEST_ADDR=10.0.2.15 GUEST_ADDR6=fd00::15

mem=2048
cpus=2
timeout_s=900
extra_env=()

usage() {
    cat <<EOF
usage: ${0##*/} [--mem MB] [--cpus N] [--timeout S] [-e VAR[=VALUE]]... [--] COMMAND...

Boots a soft-RoCE VM (rxe0 on eth0, $GUEST_ADDR), runs COMMAND as root in the caller's
working directory and exits with its status. The host file system is visible read-only with
a throw-away writable layer on top; /tmp in the VM is a fresh tmpfs (unless the working
directory is under /tmp: then the host's /tmp shows through, writable in RAM).
Variables named MFR_* (and those given with -e) are passed to COMMAND, plus
MFR_TEST_RDMA_ADDR=$GUEST_ADDR, MFR_TEST_RDMA_ADDR6=$GUEST_ADDR6, MFR_TEST_RDMA_DEV=rxe0, MFR_VM=1
and MFR_VM_LINK_UP (a script that restores eth0 and a fresh rxe0 after a test took them down).

  --mem MB       guest RAM (default $mem)
  --cpus N       virtual CPUs (default $cpus)
  --timeout S    kill the VM after S seconds (default $timeout_s), exit 124
  -e VAR[=VAL]   also pass VAR (with its host value, or VAL) to COMMAND

Environment: MFR_VM_CACHE (initramfs cache, default ~/.cache/mfrdma-vm),
MFR_VM_KERNEL (kernel version to boot), MFR_VM_REQUIRED=1 (fail instead of skip when no VM
can run here).
Exit status: COMMAND's; 77 no VM possible here; 124 timeout; 125 VM failed.
EOF
}

log() { printf 'mfr-vm: %s\n' "$*" >&2; }
die() { local rc=$1; shift; log "error: $*"; exit "$rc"; }
# The VM cannot run on this machine at all: a skip for meson, unless the caller insists.
skip() {
    if [[ ${MFR_VM_REQUIRED:-0} == 1 ]]; then
        die 125 "$* (MFR_VM_REQUIRED=1)"
    fi
    log "skipping: $*"
    exit 77
}
is_uint() { [[ $1 =~ ^[0-9]+$ && $1 -gt 0 ]]; }

while (($#)); do
    case $1 in
    --mem) mem=${2-}; shift 2 || true ;;
    --mem=*) mem=${1#*=}; shift ;;
    --cpus) cpus=${2-}; shift 2 || true ;;
    --cpus=*) cpus=${1#*=}; shift ;;
    --timeout) timeout_s=${2-}; shift 2 || true ;;
    --timeout=*) timeout_s=${1#*=}; shift ;;
    -e|--env) [[ -n ${2-} ]] || die 2 "$1 needs VAR or VAR=VALUE"; extra_env+=("$2"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) usage >&2; die 2 "unknown option '$1'" ;;
    *) break ;;
    esac
done
(($#)) || { usage >&2; die 2 "no COMMAND given"; }
is_uint "$mem" || die 2 "--mem wants a positive number of MiB, got '$mem'"
is_uint "$cpus" || die 2 "--cpus wants a positive number, got '$cpus'"
is_uint "$timeout_s" || die 2 "--timeout wants a positive number of seconds, got '$timeout_s'"

# ---- host dependencies ---------------------------------------------------------------------

ensure_packages() {
    local missing=() p
    if ! command -v dpkg-query >/dev/null; then
        for p in qemu-system-x86_64 busybox modprobe cpio; do
            command -v "$p" >/dev/null || skip "'$p' not found and this is not a Debian system"
        done
        return
    fi
    for p in "${PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null; then
        skip "missing packages: ${missing[*]} (install them, or run as root to let me)"
    fi
    log "installing: ${missing[*]}"
    apt-get update -q >&2 ||
        die 125 "apt-get update failed; cannot install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >&2 || die 125 "apt-get install ${missing[*]} failed"
}

# Newest installed kernel that ships rdma_rxe (the running kernel may well be a different one).
pick_kernel() {
    local v kver best=
    if [[ -n ${MFR_VM_KERNEL:-} ]]; then
        best=$MFR_VM_KERNEL
    else
        for v in /boot/vmlinuz-*; do
            [[ -e $v ]] || continue
            kver=${v#/boot/vmlinuz-}
            compgen -G "/lib/modules/$kver/kernel/drivers/infiniband/sw/rxe/rdma_rxe.ko*" \
                >/dev/null || continue
            best=$(printf '%s\n%s\n' "$best" "$kver" | sort -V | tail -n1)
        done
    fi
    [[ -n $best ]] || skip "no kernel in /boot with rdma_rxe modules (install linux-image-amd64)"
    [[ -r /boot/vmlinuz-$best ]] || skip "/boot/vmlinuz-$best is missing or not readable"
    KVER=$best
    KERNEL=/boot/vmlinuz-$best
}

ensure_packages
command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 not found"
BUSYBOX=$(command -v busybox || true)
# ldd fails on a static binary; the initramfs has no libc for a dynamic one.
if [[ -z $BUSYBOX ]] || ldd "$BUSYBOX" >/dev/null 2>&1; then
    skip "need a statically linked busybox (package busybox-static)"
fi
pick_kernel

# ---- initramfs (cached per kernel version and per version of this script) --------------------

# Stage 1, PID 1 in the initramfs: load modules, build the root (9p + tmpfs overlay), switch.
write_init() {
    cat <<'EOF'
#!/bin/busybox sh
# mfrdma soft-RoCE VM, stage 1: modules, host root over 9p + tmpfs overlay, then stage 2.
/bin/busybox --install -s /bin
export PATH=/bin
fail() {
    echo "mfr-vm: guest: $*"
    echo "MFR-VM-EXIT=125"
    poweroff -f
    sleep 60
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do
    insmod "/modules/$m" || fail "insmod $m failed"
done </modules/order
opts=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o "$opts,ro,cache=loose" hostroot /lower || fail "cannot mount the host root (9p)"
mount -t tmpfs -o mode=0755 rw /rw || fail "cannot mount tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot ||
    fail "cannot mount the overlay root"
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm /newroot/mfr-job
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 shm /newroot/dev/shm
mount -t tmpfs -o mode=0755 run /newroot/run
mount -t 9p -o "$opts" mfrjob /newroot/mfr-job || fail "cannot mount the job directory (9p)"
[ -x /newroot/bin/bash ] || fail "the host root has no /bin/bash"
exec switch_root /newroot /bin/bash /mfr-job/guest.sh
fail "switch_root failed"
EOF
}

build_initramfs() {
    local out=$1 dir m src dst i=0
    dir=$(mktemp -d "${TMPDIR:-/tmp}/mfr-initramfs.XXXXXX")
    # shellcheck disable=SC2064 # expand now: dir is local
    trap "rm -rf '$dir'" RETURN
    mkdir -p "$dir"/{bin,dev,proc,sys,lower,rw,newroot,modules}
    cp "$BUSYBOX" "$dir/bin/busybox"
    for m in "${MODULES[@]}"; do
        modprobe -S "$KVER" --show-depends "$m" ||
            die 125 "modprobe cannot resolve module '$m' for kernel $KVER"
    done | awk '$1 == "insmod" && !seen[$2]++ { print $2 }' >"$dir/paths"
    [[ -s $dir/paths ]] || die 125 "no modules found for kernel $KVER"
    : >"$dir/modules/order"
    while read -r src; do
        dst=$(printf '%02d-%s' "$i" "$(basename "$src")")
        i=$((i + 1))
        # busybox insmod only takes plain .ko files.
        case $src in
        *.ko.xz) dst=${dst%.xz}; xz -dc "$src" >"$dir/modules/$dst" ;;
        *.ko.zst) dst=${dst%.zst}; zstd -qdc "$src" >"$dir/modules/$dst" ;;
        *.ko.gz) dst=${dst%.gz}; gzip -dc "$src" >"$dir/modules/$dst" ;;
        *) cp "$src" "$dir/modules/$dst" ;;
        esac || die 125 "cannot copy module $src"
        echo "$dst" >>"$dir/modules/order"
    done <"$dir/paths"
    rm "$dir/paths"
    write_init >"$dir/init"
    chmod 755 "$dir/init"
    (cd "$dir" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 >"$out.tmp.$$"
    mv -f "$out.tmp.$$" "$out"
}

CACHE=${MFR_VM_CACHE:-${HOME:-/root}/.cache/mfrdma-vm}
mkdir -p "$CACHE" || skip "cannot create cache directory $CACHE"
KEY=$(sha256sum "$SELF" | cut -c1-16)
INITRD=$CACHE/initramfs-$KVER-$KEY.cpio.gz
if [[ ! -s $INITRD ]]; then
    log "building initramfs for $KVER in $CACHE"
    find "$CACHE" -maxdepth 1 -name "initramfs-$KVER-*.cpio.gz" -delete 2>/dev/null || true
    build_initramfs "$INITRD"
fi

# ---- the job: what stage 2 runs, shared read-write over 9p -------------------------------------

JOB=$(mktemp -d "${TMPDIR:-/tmp}/mfr-vm-job.XXXXXX")
trap 'rm -rf "$JOB"' EXIT

{
    printf 'MFR_JOB_CWD=%q\n' "$PWD"
    for v in PATH HOME LANG LC_ALL TERM $(compgen -e | grep '^MFR_' || true); do
        [[ -n ${!v+x} ]] && printf 'export %s=%q\n' "$v" "${!v}"
    done
    for v in "${extra_env[@]}"; do
        if [[ $v == *=* ]]; then
            printf 'export %s=%q\n' "${v%%=*}" "${v#*=}"
        elif [[ -n ${!v+x} ]]; then
            printf 'export %s=%q\n' "$v" "${!v}"
        fi
    done
    printf 'export MFR_TEST_RDMA_ADDR=%s MFR_TEST_RDMA_ADDR6=%s MFR_TEST_RDMA_DEV=rxe0 MFR_VM=1\n' \
        "$GUEST_ADDR" "$GUEST_ADDR6"
    printf 'export MFR_VM_LINK_UP=/mfr-job/link-up.sh\n'
    printf 'job_argv=('
    printf '%q ' "$@"
    printf ')\n'
} >"$JOB/job.sh"

# /tmp in the VM is a fresh tmpfs (no stale host sockets or files), unless the command runs
# from under /tmp: then the host's /tmp shows through the overlay (writes still stay in RAM).
case $PWD/ in
/tmp/*) fresh_tmp="# working directory under /tmp: keep the host's /tmp (overlay)" ;;
*) fresh_tmp="mount -t tmpfs -o mode=1777 tmp /tmp" ;;
esac

# Network and rxe0, at boot and again for tests that take eth0 down (MFR_VM_LINK_UP).
cat >"$JOB/link-up.sh" <<EOF
#!/bin/bash
# mfrdma soft-RoCE VM: (re)creates eth0's addresses and routes and a fresh rxe0 on it.
ip link set eth0 up || { echo "mfr-vm: no eth0"; exit 1; }
ip addr replace $GUEST_ADDR/24 dev eth0 || { echo "mfr-vm: cannot set the IPv4 address"; exit 1; }
ip route replace default via 10.0.2.2
ip -6 addr replace $GUEST_ADDR6/64 dev eth0 nodad || echo "mfr-vm: guest: no IPv6 address"
# rxe in Linux 6.1 completes no new CM exchange after its netdev went down under traffic
# (measured: every connect times out until the device is re-created), so always a fresh one.
rdma link del rxe0 2>/dev/null
rdma link add rxe0 type rxe netdev eth0 || { echo "mfr-vm: rdma link add rxe0 failed"; exit 1; }
for i in \$(seq 100); do
    ibv_devinfo -d rxe0 2>/dev/null | grep -q PORT_ACTIVE && exit 0
    sleep 0.2
done
echo "mfr-vm: rxe0 never became ACTIVE"
exit 1
EOF
chmod +x "$JOB/link-up.sh"

# Stage 2, PID 1 in the overlay root (host binaries): network, rxe0, then the command.
cat >"$JOB/guest.sh" <<EOF
#!/bin/bash
# mfrdma soft-RoCE VM, stage 2: network, rxe0, the command, power off with its status.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
finish() {
    sync
    echo "\$1" >/mfr-job/rc
    echo "MFR-VM-EXIT=\$1"
    # busybox-static is on the host root; its poweroff -f is the reboot(2) call, synchronous.
    /bin/busybox poweroff -f
    echo o >/proc/sysrq-trigger
    sleep 60
}
fail() { echo "mfr-vm: guest: \$*"; finish 125; }
exec </dev/null
hostname mfr-vm
$fresh_tmp
ip link set lo up
/mfr-job/link-up.sh || fail "network or rxe0 set-up failed"
ulimit -l unlimited
. /mfr-job/job.sh
cd "\$MFR_JOB_CWD" || fail "cannot cd to \$MFR_JOB_CWD"
echo "mfr-vm: rxe0 ACTIVE after \$(cut -d' ' -f1 /proc/uptime) s of guest uptime; running: \${job_argv[*]}"
# Output through a pipe, not the serial tty: programs then print as they do in CI (no
# progress bars, no colours). A leftover background process may keep the pipe open, so cat
# gets a moment to drain and is then stopped rather than waited for.
mkfifo /run/mfr-out
cat /run/mfr-out &
cat_pid=\$!
"\${job_argv[@]}" >/run/mfr-out 2>&1
rc=\$?
for i in \$(seq 20); do
    kill -0 \$cat_pid 2>/dev/null || break
    sleep 0.1
done
kill \$cat_pid 2>/dev/null
finish \$rc
EOF

# ---- boot -------------------------------------------------------------------------------------

start=$SECONDS
log "booting $KVER (TCG, ${cpus} vCPU, ${mem} MiB, timeout ${timeout_s} s)"
# The console goes through a filter (CRs, power-off noise) to our stdout and to a log that
# holds the exit marker. qemu runs in the background so a signal to this script can stop it.
mkfifo "$JOB/console.fifo"
sed -u -e 's/\r$//' -e '/^\[ *[0-9.]*\] \(sysrq: Power Off\|reboot: Power down\)/d' \
    <"$JOB/console.fifo" | tee "$JOB/console" &
filter_pid=$!
# stdin from /dev/null: the serial console is output only, and a terminal stays untouched.
timeout -k 5 "$timeout_s" qemu-system-x86_64 \
    -accel tcg -cpu max -smp "$cpus" -m "$mem" \
    -nodefaults -no-user-config -display none -no-reboot \
    -kernel "$KERNEL" -initrd "$INITRD" \
    -append "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init" \
    -chardev stdio,id=con,signal=off -serial chardev:con \
    -virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap \
    -virtfs local,path="$JOB",mount_tag=mfrjob,security_model=none \
    -netdev user,id=net0,ipv6=on -device virtio-net-pci,netdev=net0 \
    </dev/null >"$JOB/console.fifo" 2>&1 &
qemu_pid=$!
# timeout(1) passes TERM on to qemu; the EXIT trap then removes the job directory.
trap 'kill -TERM "$qemu_pid" 2>/dev/null; wait "$qemu_pid"; log "interrupted"; exit 130' INT TERM HUP
qemu_rc=0
wait "$qemu_pid" || qemu_rc=$?
trap - INT TERM HUP
wait "$filter_pid" || true
elapsed=$((SECONDS - start))

if [[ $qemu_rc -eq 124 || $qemu_rc -eq 137 ]]; then
    die 124 "VM timed out after ${timeout_s} s (killed qemu)"
fi
rc=
if [[ -s $JOB/rc ]]; then
    rc=$(<"$JOB/rc")
else
    rc=$(sed -n 's/^MFR-VM-EXIT=\([0-9]\+\)$/\1/p' "$JOB/console" | tail -n1)
fi
[[ $rc =~ ^[0-9]+$ ]] ||
    die 125 "VM stopped without reporting an exit status (qemu status $qemu_rc, after ${elapsed} s)"
log "VM done in ${elapsed} s, command exit status $rc"
exit "$rc"
