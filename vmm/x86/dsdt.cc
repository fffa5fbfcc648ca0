#include "x86/dsdt.h"

#include <cstring>

namespace vmm {
namespace {

using Bytes = std::vector<uint8_t>;

// AML opcodes (ACPI 6.5, 20.2.5).
constexpr uint8_t kZeroOp = 0x00, kNameOp = 0x08, kScopeOp = 0x10, kBufferOp = 0x11;
constexpr uint8_t kPackageOp = 0x12;
constexpr uint8_t kByteConst = 0x0a, kWordConst = 0x0b, kDWordConst = 0x0c;
constexpr uint8_t kExtOpPrefix = 0x5b, kDeviceOp = 0x82, kRootChar = 0x5c;

void append(Bytes& out, const Bytes& b) { out.insert(out.end(), b.begin(), b.end()); }
void le(Bytes& out, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void name_seg(Bytes& out, const char* seg) {  // 20.2.2: four characters, '_' padded
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(seg[i]));
}

// Opcode(s), PkgLength, name, contents: DefScope, DefDevice (20.2.5.1, 20.2.5.2).
Bytes package(std::initializer_list<uint8_t> op, const Bytes& name, const Bytes& body) {
  Bytes inner = name;
  append(inner, body);
  Bytes out(op);
  append(out, aml_pkg_length(inner.size()));
  append(out, inner);
  return out;
}

// Name (seg, value) where value is an already encoded DataRefObject.
Bytes name(const char* seg, const Bytes& value) {
  Bytes out{kNameOp};
  name_seg(out, seg);
  append(out, value);
  return out;
}

Bytes integer(uint32_t v) {  // the shortest constant encoding (20.2.3)
  if (v == 0) return {kZeroOp};
  Bytes out;
  if (v <= 0xff) {
    out.push_back(kByteConst);
    le(out, v, 1);
  } else if (v <= 0xffff) {
    out.push_back(kWordConst);
    le(out, v, 2);
  } else {
    out.push_back(kDWordConst);
    le(out, v, 4);
  }
  return out;
}

// EisaId("PNP0A08"): 3 compressed letters (5 bits each, 'A' = 1) and 4 hex digits, stored as a
// big-endian 32-bit value in the integer's little-endian bytes (19.6.35).
Bytes eisa_id(const char* id) {
  auto hex = [](char c) -> uint32_t { return c <= '9' ? c - '0' : c - 'A' + 10; };
  uint32_t v = ((id[0] - '@') & 0x1f) << 26 | ((id[1] - '@') & 0x1f) << 21 |
               ((id[2] - '@') & 0x1f) << 16 | hex(id[3]) << 12 | hex(id[4]) << 8 | hex(id[5]) << 4 |
               hex(id[6]);
  Bytes out{kDWordConst};
  le(out, __builtin_bswap32(v), 4);
  return out;
}

// 6.4.3.5.3 Word Address Space Descriptor; type 1 = I/O, 2 = bus number range. Producer, fixed
// minimum and maximum, positive decode.
void word_space(Bytes& out, uint8_t type, uint8_t type_flags, uint16_t min, uint16_t max) {
  out.push_back(0x88);
  le(out, 13, 2);
  out.push_back(type);
  out.push_back(0x0c);  // _MIF | _MAF
  out.push_back(type_flags);
  le(out, 0, 2);  // granularity
  le(out, min, 2);
  le(out, max, 2);
  le(out, 0, 2);  // translation
  le(out, uint32_t(max) - min + 1, 2);
}

// 6.4.3.5.2 DWord Address Space Descriptor, memory, read-write, non-cacheable.
void dword_memory(Bytes& out, uint32_t min, uint32_t max) {
  out.push_back(0x87);
  le(out, 23, 2);
  out.push_back(0);     // memory range
  out.push_back(0x0c);  // _MIF | _MAF
  out.push_back(0x01);  // read-write, non-cacheable
  le(out, 0, 4);
  le(out, min, 4);
  le(out, max, 4);
  le(out, 0, 4);
  le(out, uint64_t(max) - min + 1, 4);
}

// 6.4.2.5 I/O Port Descriptor, 16-bit decode, fixed range.
void io_port(Bytes& out, uint16_t base, uint8_t len) {
  out.push_back(0x47);
  out.push_back(0x01);
  le(out, base, 2);
  le(out, base, 2);
  out.push_back(1);
  out.push_back(len);
}

Bytes resource_template(Bytes rt);

Bytes root_bridge_crs(const PciRootWindows& w) {
  Bytes rt;
  word_space(rt, 2, 0, 0, 0);              // bus 0 only
  io_port(rt, 0xcf8, 8);                   // the configuration ports themselves
  word_space(rt, 1, 0x03, 0x0000, 0x0cf7);  // I/O windows, ISA and non-ISA ranges
  word_space(rt, 1, 0x03, 0x0d00, 0xffff);
  dword_memory(rt, static_cast<uint32_t>(w.mmio_start), static_cast<uint32_t>(w.mmio_end - 1));
  return resource_template(std::move(rt));
}

// Name (_S5, Package () { SLP_TYPa, SLP_TYPb }) (7.4.2.4): the value the guest writes into the
// FADT's sleep control register to power off (devices/acpi_sleep.h).
Bytes s5_package() {
  Bytes body{2};  // NumElements
  append(body, integer(kAcpiS5SleepType));
  append(body, integer(0));
  Bytes out{kPackageOp};
  append(out, aml_pkg_length(body.size()));
  append(out, body);
  return out;
}

// A ResourceTemplate buffer around the descriptors in rt, with its End Tag.
Bytes resource_template(Bytes rt) {
  rt.push_back(0x79);  // 6.4.2.9 End Tag; checksum 0: "treat as if the checksum is valid"
  rt.push_back(0x00);
  Bytes body = integer(static_cast<uint32_t>(rt.size()));
  append(body, rt);
  Bytes out{kBufferOp};  // 19.3.3 ResourceTemplate is a Buffer
  append(out, aml_pkg_length(body.size()));
  append(out, body);
  return out;
}

// 6.4.3.6 Extended Interrupt Descriptor: one GSI, consumer, edge-triggered, active-high,
// exclusive (an ISA interrupt as the 8250 raises it).
void edge_interrupt(Bytes& out, uint32_t gsi) {
  out.push_back(0x89);
  le(out, 6, 2);
  out.push_back(0x03);  // consumer | edge
  out.push_back(1);     // one interrupt number
  le(out, gsi, 4);
}

// Device (COM1): the 8250 at 0x3F8, IRQ 4. A hardware-reduced ACPI Linux has no legacy PIC and
// preallocates no ISA interrupts, so the legacy 8250 port gets its IRQ only through this _CRS
// (without it userspace never sees a byte on ttyS0: measured with Linux 6.1).
Bytes com1_device() {
  Bytes dev;
  append(dev, name("_HID", eisa_id("PNP0501")));
  append(dev, name("_UID", integer(0)));
  Bytes rt;
  io_port(rt, 0x3f8, 8);
  edge_interrupt(rt, 4);
  append(dev, name("_CRS", resource_template(rt)));
  Bytes com1;
  name_seg(com1, "COM1");
  return package({kExtOpPrefix, kDeviceOp}, com1, dev);
}

}  // namespace

Bytes aml_pkg_length(size_t n) {
  // The length includes the PkgLength bytes: 1 byte up to 63, else a lead byte carrying the
  // low nibble and the count of following bytes (bits 7-6), then 8 bits per byte.
  if (n + 1 < 0x40) return {static_cast<uint8_t>(n + 1)};
  for (size_t extra = 1; extra <= 3; ++extra) {
    size_t len = n + 1 + extra;
    if (len < (size_t(1) << (4 + 8 * extra))) {
      Bytes out{static_cast<uint8_t>((extra << 6) | (len & 0x0f))};
      for (size_t i = 0; i < extra; ++i) out.push_back(static_cast<uint8_t>(len >> (4 + 8 * i)));
      return out;
    }
  }
  return {};  // > 256 MiB: never for our tables
}

Bytes build_dsdt_aml(const PciRootWindows& w) {
  Bytes dev;
  append(dev, name("_HID", eisa_id("PNP0A08")));
  append(dev, name("_CID", eisa_id("PNP0A03")));
  append(dev, name("_ADR", integer(0)));
  append(dev, name("_SEG", integer(0)));
  append(dev, name("_UID", integer(0)));
  append(dev, name("_BBN", integer(0)));
  append(dev, name("_CRS", root_bridge_crs(w)));
  Bytes pci0;
  name_seg(pci0, "PCI0");
  Bytes sb{kRootChar};
  name_seg(sb, "_SB_");
  Bytes scope = package({kExtOpPrefix, kDeviceOp}, pci0, dev);
  append(scope, com1_device());
  Bytes out = package({kScopeOp}, sb, scope);
  append(out, name("_S5_", s5_package()));
  return out;
}

}  // namespace vmm
