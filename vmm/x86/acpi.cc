#include "x86/acpi.h"

#include <cstring>

#include "img/bytes.h"
#include "kvm/guest_ram.h"
#include "devices/acpi_sleep.h"
#include "x86/dsdt.h"
#include "x86/layout.h"
#include "x86/mptable.h"

namespace vmm {
namespace {

constexpr size_t kHeader = 36;

// 5.2.6 System Description Table Header.
std::vector<uint8_t> sdt(const char* sig, size_t len, uint8_t revision) {
  std::vector<uint8_t> t(len, 0);
  std::memcpy(&t[0], sig, 4);
  img::store_le32(&t[4], static_cast<uint32_t>(len));
  t[8] = revision;
  std::memcpy(&t[10], "LNVMM ", 6);
  std::memcpy(&t[16], "LEANVMM ", 8);
  img::store_le32(&t[24], 1);
  std::memcpy(&t[28], "LVMM", 4);
  img::store_le32(&t[32], 1);
  return t;
}

void seal(std::vector<uint8_t>& t) { t[9] = uint8_t(-byte_sum(t.data(), t.size())); }

}  // namespace

img::Result<AcpiTables> build_acpi_tables(uint32_t cpus, uint64_t base) {
  if (cpus == 0 || cpus > kMaxCpus) return img::invalid_argument("ACPI: CPU count out of range");
  const uint64_t rsdp_at = base, xsdt_at = base + 0x40, fadt_at = base + 0x80;
  const uint64_t madt_at = base + 0x1a0;

  size_t madt_len = kHeader + 8 + 8 * cpus + 12 + 6;
  std::vector<uint8_t> madt = sdt("APIC", madt_len, 4);
  img::store_le32(&madt[36], static_cast<uint32_t>(layout::kLapicAddr));
  img::store_le32(&madt[40], 1);  // PCAT_COMPAT: dual 8259s present
  size_t p = 44;
  for (uint32_t i = 0; i < cpus; ++i, p += 8) {  // 5.2.12.2 Processor Local APIC
    madt[p] = 0;
    madt[p + 1] = 8;
    madt[p + 2] = static_cast<uint8_t>(i);  // ACPI processor UID
    madt[p + 3] = static_cast<uint8_t>(i);  // APIC id
    img::store_le32(&madt[p + 4], 1);       // enabled
  }
  madt[p] = 1;  // 5.2.12.3 I/O APIC
  madt[p + 1] = 12;
  madt[p + 2] = static_cast<uint8_t>(cpus);
  img::store_le32(&madt[p + 4], static_cast<uint32_t>(layout::kIoapicAddr));
  img::store_le32(&madt[p + 8], 0);  // GSI base
  p += 12;
  madt[p] = 4;  // 5.2.12.7 Local APIC NMI: all processors, LINT1
  madt[p + 1] = 6;
  madt[p + 2] = 0xff;
  madt[p + 5] = 1;
  seal(madt);

  // The DSDT goes last: its length depends on the AML.
  const uint64_t dsdt_at = (madt_at + madt.size() + 15) & ~uint64_t(15);
  std::vector<uint8_t> aml = build_dsdt_aml({kPciHoleStart, kPciHoleEnd});
  std::vector<uint8_t> dsdt = sdt("DSDT", kHeader + aml.size(), 2);
  std::memcpy(&dsdt[kHeader], aml.data(), aml.size());
  seal(dsdt);

  std::vector<uint8_t> fadt = sdt("FACP", 276, 6);
  img::store_le32(&fadt[40], static_cast<uint32_t>(dsdt_at));  // DSDT
  fadt[109] = 0x02;                                             // IAPC_BOOT_ARCH: 8042 present
  fadt[109] |= 0x04;                                            // VGA not present
  img::store_le32(&fadt[112], 1u << 20);                        // Flags: HW_REDUCED_ACPI
  fadt[131] = 5;                                                // FADT minor version (6.5)
  img::store_le64(&fadt[140], dsdt_at);                         // X_DSDT
  // 5.2.9: SLEEP_CONTROL_REG and SLEEP_STATUS_REG, byte-wide System I/O (5.2.3.2 GAS); without
  // them a hardware-reduced guest cannot power off (Linux offers S5 only when both exist).
  for (uint32_t i = 0; i < 2; ++i) {
    uint8_t* gas = &fadt[244 + 12 * i];
    gas[0] = 1;  // System I/O
    gas[1] = 8;  // register bit width
    gas[3] = 1;  // byte access
    img::store_le64(&gas[4], AcpiSleep::kBase + i);
  }
  std::memcpy(&fadt[268], "LEANVMM ", 8);                       // hypervisor vendor identity
  seal(fadt);

  std::vector<uint8_t> xsdt = sdt("XSDT", kHeader + 16, 1);
  img::store_le64(&xsdt[36], fadt_at);
  img::store_le64(&xsdt[44], madt_at);
  seal(xsdt);

  std::vector<uint8_t> rsdp(36, 0);  // 5.2.5.3 RSDP structure, revision 2
  std::memcpy(&rsdp[0], "RSD PTR ", 8);
  std::memcpy(&rsdp[9], "LNVMM ", 6);
  rsdp[15] = 2;
  img::store_le32(&rsdp[20], 36);
  img::store_le64(&rsdp[24], xsdt_at);
  rsdp[8] = uint8_t(-byte_sum(rsdp.data(), 20));
  rsdp[32] = uint8_t(-byte_sum(rsdp.data(), 36));

  AcpiTables out;
  out.rsdp = rsdp_at;
  out.bytes.assign(dsdt_at + dsdt.size() - base, 0);
  auto put = [&](uint64_t at, const std::vector<uint8_t>& t) {
    std::memcpy(&out.bytes[at - base], t.data(), t.size());
  };
  put(rsdp_at, rsdp);
  put(xsdt_at, xsdt);
  put(fadt_at, fadt);
  put(dsdt_at, dsdt);
  put(madt_at, madt);
  return out;
}

}  // namespace vmm
