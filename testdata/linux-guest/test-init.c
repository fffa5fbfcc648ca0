/* /init of the vmm Linux test guest: a test client for our devices, driven through Linux's own
 * drivers, not a libc.
 *
 * It mounts devtmpfs and proc, runs the checks named on the kernel command line
 * (check=blk,scsi,...), prints one verdict line per check on the console,
 *     CHECK <name> PASS <what was done>
 *     CHECK <name> FAIL <what went wrong>
 *     CHECK <name> NOTBUILT not built yet
 * then "INIT: done", drains the console and reboots (vmm exits 0 on the i8042 reset with
 * reboot=k), or powers off with then=poweroff (ACPI S5: vmm exits 0 and says so).
 * Options: ext4dev=vdX (the ext4 check's disk), ncpus=N (the CPUs the smp check expects).
 *
 * Why it looks like this (docs/vmm.md "A real Linux guest"): under kvm_pvm a user-mode 64-bit
 * `syscall` never reaches the guest kernel, a user-mode `int $0x80` arrives as #UD (the test
 * kernel's patch runs the system call from there) and user-mode SSE raises #UD. And 32-bit
 * (compat mode) user code runs in the emulator, about 1000x slower than 64-bit user code, which
 * runs natively (measured: a 20M-iteration loop did not finish in 200 s as a 32-bit binary; 200M
 * iterations took 1.2 s as a 64-bit one). So this is a 64-bit static binary, freestanding, built
 * with -mgeneral-regs-only, that makes every system call with `int $0x80`, i.e. through the
 * i386 ABI: 32-bit numbers, arguments and pointers. Its stack is moved into .bss at start so
 * that every pointer it passes (static data and locals alike) is below 4 GiB. */

#include "plan.h"

/* i386 system call numbers (arch/x86/entry/syscalls/syscall_32.tbl). */
enum {
  NR_read = 3, NR_write = 4, NR_open = 5, NR_close = 6, NR_mount = 21, NR_sync = 36,
  NR_mkdir = 39, NR_umount2 = 52, NR_ioctl = 54, NR_dup2 = 63, NR_reboot = 88, NR_fsync = 118,
  NR_pread64 = 180, NR_pwrite64 = 181, NR_socket = 359, NR_bind = 361, NR_setsockopt = 366,
  NR_sendto = 369, NR_recvfrom = 371, NR_poll = 168,
};
enum { O_RDONLY = 0, O_WRONLY = 1, O_RDWR = 2, O_CREAT = 0x40, O_NOCTTY = 0x100, O_TRUNC = 0x200, O_DIRECT = 0x4000, O_LARGEFILE = 0x8000 };
#define TCSBRK 0x5409u       /* with arg 1: wait until the output has drained */
#define BLKGETSIZE64 0x80041272u /* _IOR(0x12, 114, size_t) as the i386 ABI numbers it */
#define BLKDISCARD 0x1277u   /* _IO(0x12, 119) */
#define BLKZEROOUT 0x127fu   /* _IO(0x12, 127) */

static long sys5(long nr, long a, long b, long c, long d, long e) {
  long r;
  __asm__ volatile("int $0x80"
                   : "=a"(r)
                   : "a"(nr), "b"(a), "c"(b), "d"(c), "S"(d), "D"(e)
                   /* a 64-bit task's int $0x80 may come back with r8-r15 zeroed */
                   : "memory", "cc", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15");
  return r;
}
#define SYS(nr, a, b, c) sys5(nr, (long)(a), (long)(b), (long)(c), 0, 0)

/* pread64/pwrite64 take the 64-bit offset as two registers, low half first. */
static long pread64(long fd, void* buf, unsigned long n, unsigned long long off) {
  return sys5(NR_pread64, fd, (long)buf, (long)n, (long)(unsigned)off, (long)(unsigned)(off >> 32));
}
static long pwrite64(long fd, const void* buf, unsigned long n, unsigned long long off) {
  return sys5(NR_pwrite64, fd, (long)buf, (long)n, (long)(unsigned)off, (long)(unsigned)(off >> 32));
}

/* gcc may emit calls to these even in freestanding code. */
void* memset(void* d, int c, unsigned long n) {
  unsigned char* p = d;
  while (n--) *p++ = (unsigned char)c;
  return d;
}
void* memcpy(void* d, const void* s, unsigned long n) {
  unsigned char* p = d;
  const unsigned char* q = s;
  while (n--) *p++ = *q++;
  return d;
}

/* ---- console output ---- */

static unsigned long slen(const char* s) {
  unsigned long n = 0;
  while (s[n]) n++;
  return n;
}
static void put(const char* s) { SYS(NR_write, 1, s, slen(s)); }
static void put_dec(unsigned long v) {
  char b[24];
  int i = sizeof b;
  b[--i] = 0;
  do b[--i] = (char)('0' + v % 10); while (v /= 10);
  put(b + i);
}
static void put_hex(unsigned long long v) {
  char b[19];
  int i = sizeof b;
  b[--i] = 0;
  do b[--i] = "0123456789abcdef"[v & 15]; while (v >>= 4);
  b[--i] = 'x';
  b[--i] = '0';
  put(b + i);
}
static void put_err(long r) {
  put(" (errno ");
  put_dec((unsigned long)-r);
  put(")");
}

static int word_eq(const char* a, unsigned long n, const char* b) {
  unsigned long i = 0;
  for (; i < n; i++)
    if (a[i] != b[i]) return 0;
  return b[i] == 0;
}

static int fail(const char* check, const char* what, long r) {
  put("CHECK ");
  put(check);
  put(" FAIL ");
  put(what);
  if (r < 0) put_err(r);
  put("\n");
  return 0;
}

static long read_file(const char* path, char* b, unsigned long cap);
/* " at <uptime> s\n": progress lines carry the guest's clock, so a slow step shows itself. */
static void put_at(void) {
  static char up[64];
  if (read_file("/proc/uptime", up, sizeof up - 1) > 0) {
    char* sp = up;
    while (*sp && *sp != ' ') sp++;
    *sp = 0;
    put(" at ");
    put(up);
    put(" s");
  }
  put("\n");
}

/* ---- check=blk and check=scsi: the plan in plan.h through Linux's drivers ---- */

#define CHUNK (128 * 1024)
static unsigned char buf[CHUNK] __attribute__((aligned(4096))); /* O_DIRECT wants alignment */

/* The plan runs on plan_dev and reports as plan_check: blk on /dev/vda (virtio-blk), scsi on
 * /dev/sda (virtio-scsi through Linux's sd driver: UNMAP/WRITE SAME for the discard and the
 * write-zeroes, SYNCHRONIZE CACHE for fsync). */
static const char* plan_check = "blk";
static const char* plan_dev = "/dev/vda";

/* Reads [off, off+len) through fd and compares it with want(o); reports the first mismatch. */
static int verify(long fd, unsigned long long off, unsigned long long len,
                  unsigned char (*want)(unsigned long long), const char* stage) {
  while (len > 0) {
    unsigned long n = len < CHUNK ? (unsigned long)len : CHUNK;
    long r = pread64(fd, buf, n, off);
    if (r != (long)n) {
      put("CHECK ");
      put(plan_check);
      put(" FAIL ");
      put(stage);
      put(": read at ");
      put_hex(off);
      if (r < 0) put_err(r);
      put("\n");
      return 0;
    }
    for (unsigned long i = 0; i < n; i++) {
      if (buf[i] != want(off + i)) {
        put("CHECK ");
      put(plan_check);
      put(" FAIL ");
        put(stage);
        put(": byte at ");
        put_hex(off + i);
        put(" is ");
        put_hex(buf[i]);
        put(", expected ");
        put_hex(want(off + i));
        put("\n");
        return 0;
      }
    }
    off += n;
    len -= n;
  }
  return 1;
}

static long write_op(long fd, unsigned i) {
  const struct blk_op* p = &kBlkPlan[i];
  for (unsigned long long done = 0; done < p->len; done += CHUNK) {
    unsigned long n = p->len - done < CHUNK ? (unsigned long)(p->len - done) : CHUNK;
    for (unsigned long k = 0; k < n; k++) buf[k] = blk_written(i, p->off + done + k);
    long r = pwrite64(fd, buf, n, p->off + done);
    if (r != (long)n) return r < 0 ? r : -5 /* EIO: short write */;
  }
  return 0;
}

static int run_plan(void) {
  long fd = SYS(NR_open, plan_dev, O_RDWR | O_DIRECT | O_LARGEFILE, 0);
  if (fd < 0) return fail(plan_check, "open the disk", fd);
  unsigned long long size = 0;
  long r = SYS(NR_ioctl, fd, BLKGETSIZE64, &size);
  if (r < 0) return fail(plan_check, "BLKGETSIZE64", r);
  if (size != BLK_DISK_SIZE) {
    put("CHECK ");
    put(plan_check);
    put(" FAIL ");
    put(plan_dev);
    put(" has ");
    put_hex(size);
    put(" bytes, expected ");
    put_hex(BLK_DISK_SIZE);
    put("\n");
    return 0;
  }
  /* The host's pattern, before anything is written, including where it ends. */
  put(plan_check);
  put(": reading the host's pattern");
  put_at();
  if (!verify(fd, 0, 512 * BLK_KIB, blk_pattern, "pattern")) return 0;
  if (!verify(fd, BLK_PATTERN_END - 64 * BLK_KIB, 128 * BLK_KIB, blk_pattern, "pattern")) return 0;

  for (unsigned i = 0; i < BLK_PLAN_LEN; i++) {
    const struct blk_op* p = &kBlkPlan[i];
    unsigned long long range[2] = {p->off, p->len};
    const char* what = "write";
    put(plan_check);
    put(": operation ");
    put_dec(i);
    put_at();
    switch (p->kind) {
      case BLK_WRITE:
        r = write_op(fd, i);
        break;
      case BLK_WRITE_BUFFERED: {
        what = "buffered write + fsync";
        long bfd = SYS(NR_open, plan_dev, O_RDWR | O_LARGEFILE, 0);
        if (bfd < 0) return fail(plan_check, "open the disk without O_DIRECT", bfd);
        r = write_op(bfd, i);
        if (r == 0) r = SYS(NR_fsync, bfd, 0, 0);
        SYS(NR_close, bfd, 0, 0);
        break;
      }
      case BLK_DISCARD:
        what = "BLKDISCARD";
        r = SYS(NR_ioctl, fd, BLKDISCARD, range);
        break;
      case BLK_ZEROOUT:
        what = "BLKZEROOUT";
        r = SYS(NR_ioctl, fd, BLKZEROOUT, range);
        break;
    }
    if (r < 0) {
      put("CHECK ");
      put(plan_check);
      put(" FAIL ");
      put(what);
      put(" at ");
      put_hex(p->off);
      put_err(r);
      put("\n");
      return 0;
    }
  }
  put(plan_check);
  put(": fsync");
  put_at();
  r = SYS(NR_fsync, fd, 0, 0); /* a virtio-blk FLUSH */
  if (r < 0) return fail(plan_check, "fsync", r);
  put(plan_check);
  put(": reading back");
  put_at();

  unsigned long long checked = 0;
  for (unsigned i = 0; i < BLK_VERIFY_LEN; i++) {
    if (!verify(fd, kBlkVerify[i].off, kBlkVerify[i].len, blk_expected, "read-back")) return 0;
    checked += kBlkVerify[i].len;
  }
  SYS(NR_close, fd, 0, 0);
  put("CHECK ");
  put(plan_check);
  put(" PASS ");
  put(plan_dev);
  put(" ");
  put_dec(BLK_PLAN_LEN);
  put(" operations (O_DIRECT and buffered writes across clusters, fsync, BLKDISCARD, BLKZEROOUT), ");
  put_dec((unsigned long)(checked >> 10));
  put(" KiB read back\n");
  return 1;
}

static int check_blk(void) {
  plan_check = "blk";
  plan_dev = "/dev/vda";
  return run_plan();
}
static int check_scsi(void) {
  plan_check = "scsi";
  plan_dev = "/dev/sda";
  return run_plan();
}

/* ---- check=ext4: a file system made on the host, on /dev/vdb (ext4dev=vda to change) ---- */

static char ext4_dev[32] = "/dev/vdb";

static int write_file(const char* path, const void* data, unsigned long n) {
  long fd = SYS(NR_open, path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return fail("ext4", path, fd);
  long r = SYS(NR_write, fd, data, n);
  if (r != (long)n) return fail("ext4", "write", r < 0 ? r : -5);
  r = SYS(NR_fsync, fd, 0, 0);
  if (r < 0) return fail("ext4", "fsync", r);
  SYS(NR_close, fd, 0, 0);
  return 1;
}

static int check_ext4(void) {
  SYS(NR_mkdir, "/mnt", 0755, 0);
  long r = sys5(NR_mount, (long)ext4_dev, (long)"/mnt", (long)"ext4", 0, 0);
  if (r < 0) return fail("ext4", "mount on /mnt", r);
  static const char host_text[] = EXT4_HOST_TEXT;
  long fd = SYS(NR_open, "/mnt/" EXT4_HOST_FILE, O_RDONLY, 0);
  if (fd < 0) return fail("ext4", "open /mnt/" EXT4_HOST_FILE, fd);
  r = SYS(NR_read, fd, buf, sizeof buf);
  SYS(NR_close, fd, 0, 0);
  if (r != (long)sizeof host_text - 1 || !word_eq((const char*)buf, (unsigned long)r, host_text))
    return fail("ext4", "the host's " EXT4_HOST_FILE " reads back wrong", r < 0 ? r : 0);
  static const char guest_text[] = EXT4_GUEST_TEXT;
  if (!write_file("/mnt/" EXT4_GUEST_FILE, guest_text, sizeof guest_text - 1)) return 0;
  r = SYS(NR_mkdir, "/mnt/" EXT4_GUEST_DIR, 0755, 0);
  if (r < 0) return fail("ext4", "mkdir /mnt/" EXT4_GUEST_DIR, r);
  for (unsigned long i = 0; i < EXT4_GUEST_DATA_LEN; i++) buf[i] = ext4_data(i);
  if (!write_file("/mnt/" EXT4_GUEST_DATA, buf, EXT4_GUEST_DATA_LEN)) return 0;
  SYS(NR_sync, 0, 0, 0);
  r = SYS(NR_umount2, "/mnt", 0, 0);
  if (r < 0) return fail("ext4", "umount /mnt", r);
  put("CHECK ext4 PASS mounted ");
  put(ext4_dev);
  put(", read " EXT4_HOST_FILE ", wrote " EXT4_GUEST_FILE " and " EXT4_GUEST_DATA ", unmounted\n");
  return 1;
}

/* ---- check=smp: every vCPU vmm started is online under Linux (ACPI MADT) ---- */

static char want_ncpus = '1'; /* ncpus=N on the command line, 1-9 */

static long mount_sysfs(void) {
  SYS(NR_mkdir, "/sys", 0555, 0);
  long r = sys5(NR_mount, (long)"sysfs", (long)"/sys", (long)"sysfs", 0, 0);
  return r == -16 /* EBUSY: mounted already */ ? 0 : r;
}

static int check_smp(void) {
  long r = mount_sysfs();
  if (r < 0) return fail("smp", "mount sysfs", r);
  static char online[32];
  r = read_file("/sys/devices/system/cpu/online", online, sizeof online);
  if (r < 0) return fail("smp", "read /sys/devices/system/cpu/online", r);
  while (r > 0 && online[r - 1] == '\n') online[--r] = 0;
  /* "0" for one CPU, "0-N" for N+1. */
  char want[4] = {'0', 0, 0, 0};
  if (want_ncpus > '1') {
    want[1] = '-';
    want[2] = (char)(want_ncpus - 1);
  }
  if (!word_eq(online, (unsigned long)r, want)) {
    put("CHECK smp FAIL online CPUs are ");
    put(online);
    put(", expected ");
    put(want);
    put("\n");
    return 0;
  }
  put("CHECK smp PASS online CPUs ");
  put(online);
  put("\n");
  return 1;
}

/* ---- check=rng: Linux's virtio-rng driver behind /dev/hwrng ---- */

static int check_rng(void) {
  long r = mount_sysfs();
  if (r < 0) return fail("rng", "mount sysfs", r);
  static char current[64];
  r = read_file("/sys/class/misc/hw_random/rng_current", current, sizeof current - 1);
  if (r < 0) return fail("rng", "read /sys/class/misc/hw_random/rng_current", r);
  while (r > 0 && current[r - 1] == '\n') current[--r] = 0;
  if (r < 10 || !word_eq(current, 10, "virtio_rng")) {
    put("CHECK rng FAIL the current hwrng is '");
    put(current);
    put("', not virtio_rng\n");
    return 0;
  }
  long fd = SYS(NR_open, "/dev/hwrng", O_RDONLY, 0);
  if (fd < 0) return fail("rng", "open /dev/hwrng", fd);
  /* Two 64-byte reads: each full, not all one byte value, and not equal to each other. */
  static unsigned char a[64], b[64];
  long ra = SYS(NR_read, fd, a, sizeof a);
  long rb = SYS(NR_read, fd, b, sizeof b);
  SYS(NR_close, fd, 0, 0);
  if (ra != (long)sizeof a) return fail("rng", "read 64 bytes from /dev/hwrng", ra < 0 ? ra : 0);
  if (rb != (long)sizeof b) return fail("rng", "second read from /dev/hwrng", rb < 0 ? rb : 0);
  int same = 1, constant = 1;
  for (unsigned i = 0; i < sizeof a; i++) {
    if (a[i] != b[i]) same = 0;
    if (a[i] != a[0]) constant = 0;
  }
  if (same || constant) return fail("rng", same ? "two reads returned the same bytes" : "a read returned one repeated byte", 0);
  put("CHECK rng PASS ");
  put(current);
  put(": two 64-byte reads from /dev/hwrng, different\n");
  return 1;
}

/* ---- check=console: Linux's virtio-console driver, /dev/hvc0 against a host socket ---- */

/* The host (vmm --console socket=PATH) waits for CONSOLE_HELLO, then answers CONSOLE_REPLY. */
static int check_console(void) {
  long fd = SYS(NR_open, "/dev/hvc0", O_RDWR | O_NOCTTY, 0);
  if (fd < 0) return fail("console", "open /dev/hvc0", fd);
  static const char hello[] = CONSOLE_HELLO "\n";
  long r = SYS(NR_write, fd, hello, sizeof hello - 1);
  if (r != (long)sizeof hello - 1) return fail("console", "write to /dev/hvc0", r < 0 ? r : 0);
  /* Canonical mode: one read returns the host's line, newline included. Waits 120 s at most,
   * so a lost answer is a FAIL line rather than a guest that never finishes. */
  static struct {
    int fd;
    short events, revents;
  } pfd;
  pfd.fd = (int)fd;
  pfd.events = 1; /* POLLIN */
  r = SYS(NR_poll, &pfd, 1, 120000);
  if (r <= 0) {
    SYS(NR_close, fd, 0, 0);
    return fail("console", r == 0 ? "no answer on /dev/hvc0 within 120 s" : "poll /dev/hvc0", r);
  }
  static char line[128];
  r = SYS(NR_read, fd, line, sizeof line - 1);
  SYS(NR_close, fd, 0, 0);
  if (r < 0) return fail("console", "read from /dev/hvc0", r);
  line[r] = 0;
  while (r > 0 && (line[r - 1] == '\n' || line[r - 1] == '\r')) line[--r] = 0;
  if (!word_eq(line, (unsigned long)r, CONSOLE_REPLY)) {
    put("CHECK console FAIL read '");
    put(line);
    put("' from /dev/hvc0, expected '" CONSOLE_REPLY "'\n");
    return 0;
  }
  put("CHECK console PASS wrote '" CONSOLE_HELLO "' to /dev/hvc0, read '" CONSOLE_REPLY "' back\n");
  return 1;
}

/* ---- check=port: a named virtio-serial port (MULTIPORT) against a host socket ---- */

static void append(char** at, const char* s) {
  while (*s) *(*at)++ = *s++;
  **at = 0;
}
static void append_dec(char** at, unsigned v) {
  if (v >= 10) append_dec(at, v / 10);
  *(*at)++ = (char)('0' + v % 10);
  **at = 0;
}

static int check_port(void) {
  long r = mount_sysfs();
  if (r < 0) return fail("port", "mount sysfs", r);
  /* Linux calls port 1 of virtio device D "vport<D>p1" (D depends on the probe order) and puts
   * the name the device sent on the control queue in its sysfs directory; the name may come
   * after the probe, so look for 30 s. */
  static char path[64], dev[32], name[160];
  int found = -1;
  for (int tries = 0; tries < 300 && found < 0; tries++) {
    for (unsigned d = 0; d < 16 && found < 0; d++) {
      char* at = path;
      append(&at, "/sys/class/virtio-ports/vport");
      append_dec(&at, d);
      append(&at, "p1/name");
      r = read_file(path, name, sizeof name - 1);
      if (r <= 0) continue;
      while (r > 0 && name[r - 1] == '\n') name[--r] = 0;
      if (word_eq(name, (unsigned long)r, PORT_NAME)) found = (int)d;
    }
    if (found < 0) SYS(NR_poll, 0, 0, 100);
  }
  if (found < 0) return fail("port", "no /sys/class/virtio-ports/vport*p1/name is " PORT_NAME, 0);
  char* at = dev;
  append(&at, "/dev/vport");
  append_dec(&at, (unsigned)found);
  append(&at, "p1");
  long fd = SYS(NR_open, dev, O_RDWR | O_NOCTTY, 0);
  if (fd < 0) return fail("port", "open the port's /dev node", fd);
  static const char hello[] = PORT_HELLO "\n";
  r = SYS(NR_write, fd, hello, sizeof hello - 1);
  if (r != (long)sizeof hello - 1) return fail("port", "write to the port", r < 0 ? r : 0);
  static struct {
    int fd;
    short events, revents;
  } pfd;
  pfd.fd = (int)fd;
  pfd.events = 1; /* POLLIN */
  static char line[128];
  long got = 0;
  /* Raw: the answer may come in pieces; read up to its newline, 120 s at most. */
  while (got == 0 || line[got - 1] != '\n') {
    r = SYS(NR_poll, &pfd, 1, 120000);
    if (r <= 0) {
      SYS(NR_close, fd, 0, 0);
      return fail("port", r == 0 ? "no answer on the port within 120 s" : "poll the port", r);
    }
    r = SYS(NR_read, fd, line + got, sizeof line - 1 - got);
    if (r <= 0) {
      SYS(NR_close, fd, 0, 0);
      return fail("port", r == 0 ? "end of file before the answer" : "read from the port", r);
    }
    got += r;
    if (got == (long)sizeof line - 1) break;
  }
  SYS(NR_close, fd, 0, 0);
  line[got] = 0;
  while (got > 0 && line[got - 1] == '\n') line[--got] = 0;
  if (!word_eq(line, (unsigned long)got, PORT_REPLY)) {
    put("CHECK port FAIL read '");
    put(line);
    put("' from ");
    put(dev);
    put(", expected '" PORT_REPLY "'\n");
    return 0;
  }
  put("CHECK port PASS ");
  put(dev);
  put(" named " PORT_NAME ": wrote '" PORT_HELLO "', read '" PORT_REPLY "' back\n");
  return 1;
}

/* ---- check=net: Linux's virtio-net driver, raw frames on eth0 through AF_PACKET ---- */

/* The i386 ABI's struct ifreq (32 bytes: the name, then a 16-byte union). */
struct ifreq32 {
  char name[16];
  union {
    short flags;
    int ifindex;
    struct {
      unsigned short family;
      unsigned char data[14];
    } hwaddr;
  } u;
};
struct sockaddr_ll32 {
  unsigned short family, protocol; /* protocol in network order */
  int ifindex;
  unsigned short hatype;
  unsigned char pkttype, halen, addr[8];
};
enum { AF_PACKET = 17, SOCK_RAW = 3, SOL_SOCKET = 1, SO_RCVTIMEO = 20, SOL_PACKET = 263,
       PACKET_QDISC_BYPASS = 20, IFF_UP = 1 };
#define SIOCGIFFLAGS 0x8913u
#define SIOCSIFFLAGS 0x8914u
#define SIOCGIFHWADDR 0x8927u
#define SIOCGIFINDEX 0x8933u
#define NET_PROTO ((unsigned short)((NET_ETHERTYPE >> 8) | ((NET_ETHERTYPE & 0xff) << 8)))

static void put_mac(const unsigned char* m) {
  static const char hex[] = "0123456789abcdef";
  char b[18];
  for (int i = 0; i < 6; i++) {
    b[i * 3] = hex[m[i] >> 4];
    b[i * 3 + 1] = hex[m[i] & 15];
    b[i * 3 + 2] = i < 5 ? ':' : 0;
  }
  put(b);
}

/* Brings eth0 up, sends NET_GUEST_TEXT to the broadcast address with the test ethertype (again
 * every 2 s: a frame sent before the link settles may be dropped) and waits for a frame
 * carrying NET_HOST_TEXT back. The host records what it saw and answers once. */
static int check_net(void) {
  long s = sys5(NR_socket, AF_PACKET, SOCK_RAW, NET_PROTO, 0, 0);
  if (s < 0) return fail("net", "socket(AF_PACKET)", s);
  static struct ifreq32 ifr;
  for (int i = 0; i < 5; i++) ifr.name[i] = "eth0"[i];
  long r = SYS(NR_ioctl, s, SIOCGIFFLAGS, &ifr);
  if (r < 0) return fail("net", "SIOCGIFFLAGS eth0 (no virtio-net interface?)", r);
  ifr.u.flags |= IFF_UP;
  r = SYS(NR_ioctl, s, SIOCSIFFLAGS, &ifr);
  if (r < 0) return fail("net", "SIOCSIFFLAGS eth0 up", r);
  r = SYS(NR_ioctl, s, SIOCGIFHWADDR, &ifr);
  if (r < 0) return fail("net", "SIOCGIFHWADDR eth0", r);
  static unsigned char mac[6];
  for (int i = 0; i < 6; i++) mac[i] = ifr.u.hwaddr.data[i];
  r = SYS(NR_ioctl, s, SIOCGIFINDEX, &ifr);
  if (r < 0) return fail("net", "SIOCGIFINDEX eth0", r);
  static struct sockaddr_ll32 ll;
  ll.family = AF_PACKET;
  ll.protocol = NET_PROTO;
  ll.ifindex = ifr.u.ifindex;
  r = SYS(NR_bind, s, &ll, sizeof ll);
  if (r < 0) return fail("net", "bind to eth0", r);
  static int one = 1;
  sys5(NR_setsockopt, s, SOL_PACKET, PACKET_QDISC_BYPASS, (long)&one, sizeof one);
  static int timeout[2] = {2, 0}; /* the i386 struct timeval */
  r = sys5(NR_setsockopt, s, SOL_SOCKET, SO_RCVTIMEO, (long)timeout, sizeof timeout);
  if (r < 0) return fail("net", "SO_RCVTIMEO", r);

  static unsigned char frame[64];
  for (int i = 0; i < 6; i++) frame[i] = 0xff, frame[6 + i] = mac[i];
  frame[12] = NET_ETHERTYPE >> 8;
  frame[13] = NET_ETHERTYPE & 0xff;
  static const char text[] = NET_GUEST_TEXT;
  for (unsigned i = 0; i < sizeof text - 1; i++) frame[14 + i] = (unsigned char)text[i];
  static struct sockaddr_ll32 to;
  to = ll;
  to.halen = 6;
  for (int i = 0; i < 6; i++) to.addr[i] = 0xff;
  static unsigned char in[2048];
  static const char want[] = NET_HOST_TEXT;
  for (int attempt = 0; attempt < 30; attempt++) {
    r = sys5(NR_sendto, s, (long)frame, sizeof frame, 0, (long)&to);
    if (r != (long)sizeof frame) return fail("net", "sendto eth0", r < 0 ? r : 0);
    for (;;) {
      long n = sys5(NR_recvfrom, s, (long)in, sizeof in, 0, 0);
      if (n < 0) break; /* the 2 s timeout: send again */
      if (n < 14 + (long)sizeof want - 1 || in[12] != frame[12] || in[13] != frame[13]) continue;
      if (!word_eq((const char*)in + 14, sizeof want - 1, want)) continue;
      SYS(NR_close, s, 0, 0);
      put("CHECK net PASS eth0 ");
      put_mac(mac);
      put(": sent '" NET_GUEST_TEXT "', read '" NET_HOST_TEXT "' back\n");
      return 1;
    }
  }
  SYS(NR_close, s, 0, 0);
  put("CHECK net FAIL no '" NET_HOST_TEXT "' frame on eth0 after 30 sends\n");
  return 0;
}

/* ---- check=balloon: Linux's virtio-balloon driver, inflated and deflated by the host ---- */

/* MemFree in kB from /proc/meminfo, or -1. */
static long mem_free_kb(void) {
  static char mi[2048];
  if (read_file("/proc/meminfo", mi, sizeof mi) <= 0) return -1;
  for (char* l = mi; *l;) {
    if (word_eq(l, 8, "MemFree:")) {
      char* c = l + 8;
      while (*c == ' ') c++;
      long v = 0;
      while (*c >= '0' && *c <= '9') v = v * 10 + (*c++ - '0');
      return v;
    }
    while (*l && *l != '\n') l++;
    if (*l) l++;
  }
  return -1;
}

/* Polls MemFree every 200 ms until it is `want` kB below its first value (rise = 0) or `want`
 * kB above the lowest value seen (rise = 1): the balloon may still be filling when a deflate
 * wait starts. Returns the value that got there, or the last one read (-1 on a read error);
 * *ok says whether it got there. */
static long wait_mem_free(long want, int rise, int* ok) {
  long first = -1, low = -1, f = -1;
  *ok = 0;
  for (int i = 0; i < BALLOON_WAIT_S * 5; i++) {
    f = mem_free_kb();
    if (f < 0) return -1;
    if (first < 0) first = f;
    if (low < 0 || f < low) low = f;
    if ((!rise && f <= first - want) || (rise && f >= low + want)) {
      *ok = 1;
      return f;
    }
    SYS(NR_poll, 0, 0, 200);
  }
  return f;
}

#define STR_(x) #x
#define STR(x) STR_(x)

static int check_balloon(void) {
  const long want = BALLOON_TEST_MIB * 1024L * 3 / 4; /* kB (plan.h: a quarter of slack) */
  long f0 = mem_free_kb();
  if (f0 < 0) return fail("balloon", "read MemFree from /proc/meminfo", 0);
  put(BALLOON_READY ", MemFree ");
  put_dec((unsigned long)f0);
  put(" kB");
  put_at();
  int ok;
  long f1 = wait_mem_free(want, 0, &ok);
  if (!ok) {
    put("CHECK balloon FAIL MemFree still ");
    put_dec((unsigned long)(f1 < 0 ? 0 : f1));
    put(" kB after " STR(BALLOON_WAIT_S) " s, from ");
    put_dec((unsigned long)f0);
    put(" kB: the balloon did not inflate\n");
    return 0;
  }
  put(BALLOON_INFLATED ", MemFree ");
  put_dec((unsigned long)f1);
  put(" kB");
  put_at();
  long f2 = wait_mem_free(want, 1, &ok);
  if (!ok) {
    put("CHECK balloon FAIL MemFree still ");
    put_dec((unsigned long)(f2 < 0 ? 0 : f2));
    put(" kB after " STR(BALLOON_WAIT_S) " s: the balloon did not deflate\n");
    return 0;
  }
  put("CHECK balloon PASS MemFree fell by ");
  put_dec((unsigned long)(f0 - f1));
  put(" kB with " STR(BALLOON_TEST_MIB) " MiB asked for, and rose to ");
  put_dec((unsigned long)f2);
  put(" kB when it was let out\n");
  return 1;
}

/* ---- check=resize: the host grows /dev/vda while Linux runs (plan.h) ---- */

static int check_resize(void) {
  long fd = SYS(NR_open, "/dev/vda", O_RDWR | O_DIRECT | O_LARGEFILE, 0);
  if (fd < 0) return fail("resize", "open /dev/vda", fd);
  unsigned long long size = 0, now = 0;
  long r = SYS(NR_ioctl, fd, BLKGETSIZE64, &size);
  if (r < 0) return fail("resize", "BLKGETSIZE64", r);
  put(RESIZE_READY ", /dev/vda has ");
  put_dec((unsigned long)(size >> 10));
  put(" KiB");
  put_at();
  const unsigned long long want = size + ((unsigned long long)RESIZE_GROW_MIB << 20);
  now = size;
  for (int i = 0; i < RESIZE_WAIT_S * 5 && now == size; i++) {
    SYS(NR_poll, 0, 0, 200);
    r = SYS(NR_ioctl, fd, BLKGETSIZE64, &now);
    if (r < 0) return fail("resize", "BLKGETSIZE64", r);
  }
  if (now != want) {
    put("CHECK resize FAIL /dev/vda has ");
    put_dec((unsigned long)(now >> 10));
    put(" KiB, expected ");
    put_dec((unsigned long)(want >> 10));
    put(" KiB\n");
    SYS(NR_close, fd, 0, 0);
    return 0;
  }
  for (unsigned i = 0; i < 4096; i++) buf[i] = RESIZE_BYTE;
  r = pwrite64(fd, buf, 4096, now - 4096);
  if (r != 4096) return fail("resize", "write the last 4 KiB", r < 0 ? r : 0);
  for (unsigned i = 0; i < 4096; i++) buf[i] = 0;
  r = SYS(NR_fsync, fd, 0, 0);
  if (r < 0) return fail("resize", "fsync", r);
  r = pread64(fd, buf, 4096, now - 4096);
  if (r != 4096) return fail("resize", "read the last 4 KiB back", r < 0 ? r : 0);
  for (unsigned i = 0; i < 4096; i++) {
    if (buf[i] != RESIZE_BYTE) return fail("resize", "the last 4 KiB read back differ", 0);
  }
  SYS(NR_close, fd, 0, 0);
  put("CHECK resize PASS /dev/vda grew from ");
  put_dec((unsigned long)(size >> 10));
  put(" KiB to ");
  put_dec((unsigned long)(now >> 10));
  put(" KiB; its new last 4 KiB written and read back\n");
  return 1;
}

/* ---- check=reboot: a mark on /dev/vda across a reboot (plan.h) ---- */

static int power_off; /* then=poweroff, or check=reboot on the second boot */

static int check_reboot(void) {
  long fd = SYS(NR_open, "/dev/vda", O_RDWR | O_DIRECT | O_LARGEFILE, 0);
  if (fd < 0) return fail("reboot", "open /dev/vda", fd);
  long r = pread64(fd, buf, 4096, 0);
  if (r != 4096) return fail("reboot", "read /dev/vda", r < 0 ? r : 0);
  const unsigned long n = slen(REBOOT_MARK);
  if (word_eq((const char*)buf, n, REBOOT_MARK)) {
    SYS(NR_close, fd, 0, 0);
    put("CHECK reboot PASS second boot: /dev/vda holds the first boot's mark; powering off\n");
    power_off = 1;
    return 1;
  }
  for (unsigned i = 0; i < 4096; i++) buf[i] = i < n ? (unsigned char)REBOOT_MARK[i] : 0;
  r = pwrite64(fd, buf, 4096, 0);
  if (r != 4096) return fail("reboot", "write the mark", r < 0 ? r : 0);
  r = SYS(NR_fsync, fd, 0, 0);
  if (r < 0) return fail("reboot", "fsync", r);
  SYS(NR_close, fd, 0, 0);
  put("CHECK reboot PASS first boot: marked /dev/vda; rebooting\n");
  power_off = 0;
  return 1;
}

/* ---- the command line and the checks ---- */

struct check {
  const char* name;
  int (*run)(void); /* 0: not built yet */
};
static const struct check kChecks[] = {
    {"blk", check_blk},         {"scsi", check_scsi},       {"net", check_net},
    {"rng", check_rng},         {"console", check_console}, {"port", check_port},
    {"balloon", check_balloon}, {"resize", check_resize},   {"ext4", check_ext4},
    {"smp", check_smp},         {"reboot", check_reboot},
};

static void run_check(const char* name, unsigned long n) {
  for (unsigned i = 0; i < sizeof kChecks / sizeof kChecks[0]; i++) {
    if (!word_eq(name, n, kChecks[i].name)) continue;
    if (kChecks[i].run) {
      kChecks[i].run();
    } else {
      put("CHECK ");
      put(kChecks[i].name);
      put(" NOTBUILT not built yet\n");
    }
    return;
  }
  put("CHECK ");
  SYS(NR_write, 1, name, n);
  put(" FAIL unknown check\n");
}

/* Reads a small /proc file into b (NUL-terminated); returns its length or a negative errno. */
static long read_file(const char* path, char* b, unsigned long cap) {
  long fd = SYS(NR_open, path, O_RDONLY, 0);
  if (fd < 0) return fd;
  long n = SYS(NR_read, fd, b, cap - 1);
  SYS(NR_close, fd, 0, 0);
  b[n > 0 ? n : 0] = 0;
  return n;
}

static void finish(void) {
  put(power_off ? "INIT: done, powering off\n" : "INIT: done, rebooting\n");
  SYS(NR_ioctl, 1, TCSBRK, 1); /* drain the UART, or the last lines may be lost */
  SYS(NR_sync, 0, 0, 0);
  sys5(NR_reboot, (long)0xfee1dead, 672274793,
       power_off ? 0x4321fedc /* POWER_OFF */ : 0x01234567 /* RESTART */, 0, 0);
  for (;;) {
  }
}

void init_main(void) {
  SYS(NR_mkdir, "/dev", 0755, 0);
  SYS(NR_mkdir, "/proc", 0555, 0);
  long md = sys5(NR_mount, (long)"devtmpfs", (long)"/dev", (long)"devtmpfs", 0, 0);
  long mp = sys5(NR_mount, (long)"proc", (long)"/proc", (long)"proc", 0, 0);
  long con = SYS(NR_open, "/dev/console", O_RDWR | O_NOCTTY, 0);
  if (con >= 0) {
    for (long fd = 0; fd < 3; fd++)
      if (fd != con) SYS(NR_dup2, con, fd, 0);
  }
  static char line[1024];
  if (md < 0) fail("init", "mount devtmpfs", md);
  if (mp < 0) fail("init", "mount proc", mp);
  if (read_file("/proc/uptime", line, 64) > 0) {
    char* sp = line;
    while (*sp && *sp != ' ') sp++;
    *sp = 0;
    put("INIT: userspace up at ");
    put(line);
    put(" s\n");
  }
  long n = read_file("/proc/cmdline", line, sizeof line);
  if (n < 0) {
    fail("init", "read /proc/cmdline", n);
    finish();
  }
  /* Options first ("ext4dev=vda", "ncpus=2", "then=poweroff"), then every "check=a,b" word,
   * the names in order. */
  for (char* w = line; *w;) {
    while (*w == ' ' || *w == '\n') w++;
    char* end = w;
    while (*end && *end != ' ' && *end != '\n') end++;
    if (end - w > 8 && end - w < 8 + 16 && word_eq(w, 8, "ext4dev=")) {
      char* d = ext4_dev + 5; /* after "/dev/" */
      for (char* c = w + 8; c < end;) *d++ = *c++;
      *d = 0;
    }
    if (end - w == 7 && word_eq(w, 6, "ncpus=") && w[6] >= '1' && w[6] <= '9') want_ncpus = w[6];
    if (word_eq(w, (unsigned long)(end - w), "then=poweroff")) power_off = 1;
    w = end;
  }
  for (char* w = line; *w;) {
    while (*w == ' ' || *w == '\n') w++;
    char* end = w;
    while (*end && *end != ' ' && *end != '\n') end++;
    if (end - w > 6 && word_eq(w, 6, "check=")) {
      for (char* c = w + 6; c < end;) {
        char* e = c;
        while (e < end && *e != ',') e++;
        if (e > c) run_check(c, (unsigned long)(e - c));
        c = e + 1;
      }
    }
    w = end;
  }
  finish();
}

/* The kernel enters here with the stack holding argc, argv, envp (unused), high in the 47-bit
 * address space; the i386 ABI would cut its addresses to 32 bits, so init runs on its own. */
static unsigned char init_stack[64 * 1024] __attribute__((aligned(16), used));
__asm__(".globl _start\n"
        "_start:\n"
        "  xorl %ebp, %ebp\n"
        "  leaq init_stack+65536(%rip), %rsp\n"
        "  call init_main\n"
        "1: jmp 1b\n");
