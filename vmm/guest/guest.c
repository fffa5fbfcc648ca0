/* The freestanding test guest: prints on COM1, runs the virtio-blk checks, then the virtio-rng
 * and virtio-console checks when those devices are there, prints a verdict ("GUEST: PASS" /
 * "GUEST: FAIL <reason>") and returns to start.S, which resets via port 0x64. Kernel command
 * line word "nodisk" makes a missing virtio-blk device a pass; "rng" and "console" make a missing
 * virtio-rng / virtio-console device a failure, "net" a missing virtio-net device. With
 * "counter" the guest then prints "GUEST: tick N" forever (so a pause shows: the count stops)
 * while it polls the i8042 keyboard; Ctrl-Alt-Del (the VMM's shutdown) makes it power off
 * through the ACPI sleep register. */
#include "guest.h"

#define COM1 0x3f8

void* memset(void* d, int c, unsigned long n) {
  u8* p = d;
  while (n--) *p++ = (u8)c;
  return d;
}

void* memcpy(void* d, const void* s, unsigned long n) {
  u8* p = d;
  const u8* q = s;
  while (n--) *p++ = *q++;
  return d;
}

static void putc(char c) {
  while (!(inb(COM1 + 5) & 0x20)) {
  }
  outb(COM1, (u8)c);
}

void puts(const char* s) {
  while (*s) {
    if (*s == '\n') putc('\r');
    putc(*s++);
  }
}

void puthex(u64 v) {
  char b[19];
  b[0] = '0';
  b[1] = 'x';
  for (int i = 0; i < 16; ++i) b[2 + i] = "0123456789abcdef"[(v >> (60 - 4 * i)) & 15];
  b[18] = 0;
  puts(b);
}

void putdec(u64 v) {
  char b[21];
  int i = 20;
  b[i] = 0;
  do {
    b[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  puts(b + i);
}

int has_word(const char* h, const char* w) {
  for (const char* start = h; *h; ++h) {
    if (h == start || h[-1] == ' ') {
      int i = 0;
      while (w[i] && h[i] == w[i]) ++i;
      if (!w[i] && (h[i] == 0 || h[i] == ' ')) return 1;
    }
  }
  return 0;
}

static u32 pci_addr(u32 bdf, u32 off) { return 0x80000000u | (bdf << 8) | (off & 0xfc); }
u32 pci_read32(u32 bdf, u32 off) {
  outl(0xcf8, pci_addr(bdf, off));
  return inl(0xcfc);
}
void pci_write32(u32 bdf, u32 off, u32 v) {
  outl(0xcf8, pci_addr(bdf, off));
  outl(0xcfc, v);
}
u8 pci_read8(u32 bdf, u32 off) { return (u8)(pci_read32(bdf, off) >> (8 * (off & 3))); }
u16 pci_read16(u32 bdf, u32 off) { return (u16)(pci_read32(bdf, off) >> (8 * (off & 2))); }

/* Set-1 scancodes (the i8042 translates by default): Ctrl 1D, Alt 38, Del E0 53; a break code
 * is the make code | 0x80. Returns 1 once Ctrl and Alt are down and Del is pressed. */
static int ctrl_alt_del_seen(u8 code) {
  static int ctrl, alt, e0;
  int ext = e0;
  e0 = code == 0xe0;
  if (e0) return 0;
  u8 key = code & 0x7f;
  int down = !(code & 0x80);
  if (key == 0x1d) ctrl = down;
  if (key == 0x38) alt = down;
  return ext && key == 0x53 && down && ctrl && alt;
}

static void counter_loop(void) {
  for (u64 n = 0;; ++n) {
    puts("GUEST: tick ");
    putdec(n);
    puts("\n");
    /* About 20 ms per tick here (each port read is a VM exit), the keyboard polled meanwhile. */
    for (int i = 0; i < 2000; ++i) {
      if (!(inb(0x64) & 1)) continue;
      if (ctrl_alt_del_seen(inb(0x60))) {
        puts("GUEST: ctrl-alt-del, powering off\n");
        outb(0x600, 0x34); /* SLP_TYP 5 << 2 | SLP_EN: ACPI S5 (vmm/devices/acpi_sleep.h) */
        for (;;) {
        }
      }
    }
  }
}

void guest_main(const u8* boot_params) {
  puts("GUEST: hello from the test guest\n");
  const char* cmdline = "";
  if (boot_params) {
    u32 p = *(const u32*)(boot_params + 0x228); /* cmd_line_ptr */
    if (p) cmdline = (const char*)(u64)p;
  }
  puts("GUEST: cmdline: ");
  puts(cmdline);
  puts("\n");
  int found = 0;
  const char* err = virtio_blk_test(&found);
  if (!found && has_word(cmdline, "nodisk")) err = 0;
  if (!err) {
    err = virtio_rng_test(&found);
    if (!found && !has_word(cmdline, "rng")) err = 0;
  }
  if (!err) {
    err = virtio_console_test(&found);
    if (!found && !has_word(cmdline, "console")) err = 0;
  }
  if (!err) {
    err = virtio_net_test(&found);
    if (!found && !has_word(cmdline, "net")) err = 0;
  }
  if (err) {
    puts("GUEST: FAIL ");
    puts(err);
    puts("\n");
  } else {
    puts("GUEST: PASS\n");
  }
  if (has_word(cmdline, "counter")) counter_loop();
  if (!err && has_word(cmdline, "readerror")) {
    virtio_blk_read_until_error();
    outb(0x600, 0x34); /* ACPI S5: the VM ends, vmm exits 0 */
    for (;;) {
    }
  }
}
