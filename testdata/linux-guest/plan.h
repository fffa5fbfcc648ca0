/* What the Linux test guest's checks do, shared by test-init.c (32-bit freestanding C in the
 * guest) and tests/vmm/linux_guest/linux_guest_test.cc (C++ on the host), so that the host
 * prepares the images and verifies them afterwards from the same plan the guest runs through
 * Linux's drivers.
 *
 * check=blk (/dev/vda, Linux's virtio-blk driver, the block layer's ioctls):
 * The disk: BLK_DISK_SIZE bytes, blk_pattern() in [0, BLK_PATTERN_END), zeros above. The
 * guest then applies kBlkPlan in order; blk_expected() is every byte afterwards. Offsets are
 * chosen around 64 KiB qcow2 clusters: writes cross cluster boundaries, the discard covers
 * whole clusters (so a qcow2 image frees them and reads zeros, as a raw file's punched hole
 * does), the write-zeroes range starts and ends inside clusters.
 * No 64-bit division anywhere: the guest links without libgcc. */
#ifndef LINUX_GUEST_PLAN_H
#define LINUX_GUEST_PLAN_H

#define BLK_DISK_SIZE (64ull << 20)
#define BLK_PATTERN_END (8ull << 20)
#define BLK_KIB 1024ull
#define BLK_MIB (1024ull * 1024ull)

enum blk_op_kind {
  BLK_WRITE,          /* pwrite on an O_DIRECT descriptor */
  BLK_WRITE_BUFFERED, /* pwrite through the page cache; fsync() must push it to the device */
  BLK_DISCARD,        /* ioctl BLKDISCARD */
  BLK_ZEROOUT,        /* ioctl BLKZEROOUT */
};

struct blk_op {
  int kind;
  unsigned long long off, len;
};

static const struct blk_op kBlkPlan[] = {
    {BLK_WRITE, 64 * BLK_KIB - 4 * BLK_KIB, 8 * BLK_KIB},        /* crosses cluster 0/1 */
    {BLK_WRITE, 192 * BLK_KIB - 2 * BLK_KIB, 132 * BLK_KIB},     /* crosses two boundaries */
    {BLK_WRITE_BUFFERED, 512 * BLK_KIB + 60 * BLK_KIB, 8 * BLK_KIB},
    {BLK_WRITE, 16 * BLK_MIB + 60 * BLK_KIB, 8 * BLK_KIB},       /* into unallocated space */
    {BLK_WRITE, BLK_DISK_SIZE - 4 * BLK_KIB, 4 * BLK_KIB},       /* the last 4 KiB */
    {BLK_DISCARD, 1 * BLK_MIB, 128 * BLK_KIB},                   /* two whole clusters */
    {BLK_ZEROOUT, 2 * BLK_MIB + 4 * BLK_KIB, 68 * BLK_KIB},      /* inside-cluster ends */
    {BLK_WRITE, 1 * BLK_MIB + 64 * BLK_KIB, 4 * BLK_KIB},        /* into the discarded range */
};
#define BLK_PLAN_LEN (sizeof(kBlkPlan) / sizeof(kBlkPlan[0]))

/* Ranges the guest reads back (O_DIRECT) and compares with blk_expected(). */
static const struct blk_op kBlkVerify[] = {
    {0, 0, 2 * BLK_MIB + 256 * BLK_KIB},
    {0, BLK_PATTERN_END - 64 * BLK_KIB, 128 * BLK_KIB},
    {0, 16 * BLK_MIB, 256 * BLK_KIB},
    {0, BLK_DISK_SIZE - 64 * BLK_KIB, 64 * BLK_KIB},
};
#define BLK_VERIFY_LEN (sizeof(kBlkVerify) / sizeof(kBlkVerify[0]))

/* What the host writes before boot. */
static inline unsigned char blk_pattern(unsigned long long o) {
  if (o >= BLK_PATTERN_END) return 0;
  return (unsigned char)((unsigned)(o >> 9) * 151u + (unsigned)(o & 511) + 1u);
}

/* What write number `i` of the plan writes at disk offset o. */
static inline unsigned char blk_written(unsigned i, unsigned long long o) {
  return (unsigned char)(((unsigned)(o >> 9) * 37u + (unsigned)(o & 511) * 3u + 0x40u * (i + 1)) ^ 0xa5u);
}

/* Every byte of the disk after the whole plan: the last operation covering o decides. */
static inline unsigned char blk_expected(unsigned long long o) {
  unsigned i = BLK_PLAN_LEN;
  while (i-- > 0) {
    const struct blk_op* p = &kBlkPlan[i];
    if (o < p->off || o >= p->off + p->len) continue;
    if (p->kind == BLK_WRITE || p->kind == BLK_WRITE_BUFFERED) return blk_written(i, o);
    return 0;
  }
  return blk_pattern(o);
}

/* check=ext4 (/dev/vdb, made by mke2fs on the host): the guest mounts it, reads the host's
 * file, writes its own file and a directory with a data file, fsyncs and unmounts; the host's
 * e2fsck -fn is then clean and debugfs shows the guest's files. */
#define EXT4_HOST_FILE "host.txt"
#define EXT4_HOST_TEXT "written by the host with mke2fs -d\n"
#define EXT4_GUEST_FILE "guest.txt"
#define EXT4_GUEST_TEXT "written by Linux through virtio-blk on our VMM\n"
#define EXT4_GUEST_DIR "guest-dir"
#define EXT4_GUEST_DATA "guest-dir/data"
#define EXT4_GUEST_DATA_LEN (96 * 1024u)
static inline unsigned char ext4_data(unsigned long o) {
  return (unsigned char)((o >> 10) * 7u + o * 13u + 5u);
}

/* check=console (/dev/hvc0, vmm --console socket=PATH): the guest writes CONSOLE_HELLO and a
 * newline; the host, having read it from its end of the socket, writes CONSOLE_REPLY and a
 * newline, which the guest must read back. */
#define CONSOLE_HELLO "hello from Linux on hvc0"
#define CONSOLE_REPLY "hello from the host"

/* check=port (a named virtio-serial port, vmm --serial-port name=PORT_NAME,path=SOCK): the guest
 * finds the port whose /sys/class/virtio-ports/vport*p1/name is PORT_NAME, writes PORT_HELLO and
 * a newline to its /dev node (raw: no tty in between); the host, having read it, answers
 * PORT_REPLY and a newline, which the guest reads back. */
#define PORT_NAME "org.example.port.0"
#define PORT_HELLO "hello from Linux on a named port"
#define PORT_REPLY "hello from the port's host"

/* check=net (eth0, vmm --net tap=...): the guest broadcasts a frame of type NET_ETHERTYPE
 * carrying NET_GUEST_TEXT; the host, listening on the tap, answers to the guest's MAC with a
 * frame carrying NET_HOST_TEXT (tests/vmm/tap_peer.h's kHostReply). */
#define NET_ETHERTYPE 0x88b5 /* IEEE 802 local experimental */
#define NET_GUEST_TEXT "vmm-linux-hello"
#define NET_HOST_TEXT "vmm-host-reply"

/* check=balloon (vmm --balloon --control PATH): the guest prints BALLOON_READY with its MemFree;
 * the host then asks (control "balloon") for BALLOON_TEST_MIB back; the guest waits until its
 * MemFree has fallen by that much (Linux's driver took the pages into the balloon) and prints
 * BALLOON_INFLATED; the host sees the pages given back, lets the balloon out again, and the
 * guest waits until MemFree has risen by that much above its lowest. "That much" allows a quarter
 * of it for the kernel's own allocations and frees meanwhile. Each wait ends after BALLOON_WAIT_S. */
#define BALLOON_TEST_MIB 16
#define BALLOON_READY "BALLOON: ready"
#define BALLOON_INFLATED "BALLOON: inflated"
#define BALLOON_WAIT_S 300

/* check=resize (vmm --control PATH, after check=blk): the guest prints RESIZE_READY with the
 * size of /dev/vda; the host grows disk 0 by RESIZE_GROW_MIB (control "block_resize"); the guest
 * waits, up to RESIZE_WAIT_S, until Linux's virtio-blk driver reports the new size (the
 * configuration-change interrupt), then writes RESIZE_BYTE over the last 4 KiB of the new space
 * and reads it back; the host finds it in the image afterwards. */
#define RESIZE_READY "RESIZE: ready"
#define RESIZE_GROW_MIB 16
#define RESIZE_BYTE 0xa5
#define RESIZE_WAIT_S 120

/* check=reboot: the first boot writes REBOOT_MARK at the start of /dev/vda (O_DIRECT, fsync) and
 * reboots; the next boot of the same VM finds it there, says so and powers off. With
 * --on-reboot restart both boots run in one vmm process: the mark proves the disk (and its data)
 * came through the machine reset. */
#define REBOOT_MARK "VMM-REBOOT-MARK\n"

#endif
