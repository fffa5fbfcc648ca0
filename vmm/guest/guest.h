/* Shared helpers of the freestanding test guest: port I/O, MMIO, COM1 output, PCI config. */
#pragma once

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) {
  u8 v;
  __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline u32 inl(u16 port) {
  u32 v;
  __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
static inline u64 rdtsc(void) {
  u32 lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return ((u64)hi << 32) | lo;
}
#define barrier() __asm__ volatile("" ::: "memory")
#define mmio8(a) (*(volatile u8*)(u64)(a))
#define mmio16(a) (*(volatile u16*)(u64)(a))
#define mmio32(a) (*(volatile u32*)(u64)(a))

void puts(const char* s);
void puthex(u64 v);
void putdec(u64 v);
void* memset(void* d, int c, unsigned long n);
void* memcpy(void* d, const void* s, unsigned long n);
int has_word(const char* haystack, const char* word);

u32 pci_read32(u32 bdf, u32 off);
void pci_write32(u32 bdf, u32 off, u32 v);
u8 pci_read8(u32 bdf, u32 off);
u16 pci_read16(u32 bdf, u32 off);

/* Each runs one device's checks; returns 0 or a reason string for the verdict, and sets *found
 * when the device is there. */
const char* virtio_blk_test(int* found);
/* After virtio_blk_test: reads the disk's first 4 KiB again and again until a request fails
 * (the backend went away), then says how: the status byte, or a timeout. */
void virtio_blk_read_until_error(void);
const char* virtio_rng_test(int* found);
const char* virtio_console_test(int* found);
const char* virtio_net_test(int* found);
