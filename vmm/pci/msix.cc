#include "pci/msix.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace vmm {

Msix::Msix(InterruptController& ic, uint16_t vectors)
    : ic_(ic),
      vectors_(vectors),
      table_(uint64_t{vectors} * kEntrySize, 0),
      pending_(vectors),
      routes_(vectors) {
  // Every entry starts masked (§6.8.2.9: vector control reset value is 1).
  for (uint16_t v = 0; v < vectors_; ++v) table_[v * kEntrySize + 12] = 1;
}

void Msix::reset() {
  std::lock_guard lock(mu_);
  enabled_ = false;
  function_masked_ = false;
  std::fill(table_.begin(), table_.end(), 0);
  for (uint16_t v = 0; v < vectors_; ++v) table_[v * kEntrySize + 12] = 1;
  std::fill(pending_.begin(), pending_.end(), false);
  for (auto& r : routes_) {
    if (r) ic_.remove_msi(r->msi);
    r.reset();
  }
}

Msix::~Msix() {
  for (auto& r : routes_) {
    if (r) ic_.remove_msi(r->msi);
  }
}

img::Status Msix::add_capability(PciConfigSpace& cfg, uint8_t bar, uint32_t table_offset,
                                 uint32_t pba_offset) {
  if (vectors_ == 0 || vectors_ > 2048 || bar > 5 || (table_offset | pba_offset) & 7) {
    return img::invalid_argument("MSI-X: bad vector count, BAR or offset");
  }
  // Body after (id, next): message control, table offset/BIR, PBA offset/BIR.
  uint8_t body[10] = {};
  uint16_t control = static_cast<uint16_t>(vectors_ - 1);
  body[0] = static_cast<uint8_t>(control);
  body[1] = static_cast<uint8_t>(control >> 8);
  uint32_t t = table_offset | bar, p = pba_offset | bar;
  std::memcpy(body + 2, &t, 4);
  std::memcpy(body + 6, &p, 4);
  const uint8_t writable[10] = {0x00, 0xc0};  // enable and function mask
  ASSIGN_OR_RETURN(cap_offset_, cfg.add_capability(kCapId, body, writable));
  return {};
}

void Msix::config_written(const PciConfigSpace& cfg, uint32_t offset, uint32_t len) {
  uint32_t ctl = cap_offset_ + 2u;
  if (cap_offset_ == 0 || offset + len <= ctl || offset >= ctl + 2) return;
  uint16_t control = cfg.load16(ctl);
  std::lock_guard lock(mu_);
  enabled_ = control & kControlEnable;
  function_masked_ = control & kControlFunctionMask;
  for (uint16_t v = 0; v < vectors_; ++v) sync_vector(v);
}

uint64_t Msix::entry_address(uint16_t v) const {
  uint64_t a;
  std::memcpy(&a, &table_[v * kEntrySize], 8);
  return a;
}
uint32_t Msix::entry_data(uint16_t v) const {
  uint32_t d;
  std::memcpy(&d, &table_[v * kEntrySize + 8], 4);
  return d;
}
bool Msix::entry_masked(uint16_t v) const { return table_[v * kEntrySize + 12] & 1; }

void Msix::table_read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = offset + i < table_.size() ? table_[offset + i] : 0xff;
  }
}

void Msix::table_write(uint64_t offset, std::span<const uint8_t> data) {
  std::lock_guard lock(mu_);
  if (offset >= table_.size() || data.size() > table_.size() - offset) return;
  for (size_t i = 0; i < data.size(); ++i) {
    uint64_t o = offset + i;
    // Only bit 0 of vector control is writable; the rest of that dword is reserved.
    if (o % kEntrySize == 12) {
      table_[o] = data[i] & 1;
    } else if (o % kEntrySize > 12) {
      continue;
    } else {
      table_[o] = data[i];
    }
  }
  uint16_t first = static_cast<uint16_t>(offset / kEntrySize);
  uint16_t last = static_cast<uint16_t>((offset + data.size() - 1) / kEntrySize);
  for (uint16_t v = first; v <= last; ++v) sync_vector(v);
}

void Msix::pba_read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < data.size(); ++i) {
    uint8_t b = 0;
    for (unsigned bit = 0; bit < 8; ++bit) {
      uint64_t v = (offset + i) * 8 + bit;
      if (v < vectors_ && pending_[v]) b |= static_cast<uint8_t>(1u << bit);
    }
    data[i] = b;
  }
}

void Msix::sync_vector(uint16_t v) {
  if (!enabled_ || function_masked_ || entry_masked(v)) return;
  uint64_t addr = entry_address(v);
  uint32_t data = entry_data(v);
  auto& r = routes_[v];
  if (!r) {
    auto msi = ic_.add_msi(addr, data);
    if (!msi) {
      std::fprintf(stderr, "msix: vector %u: %s\n", v, msi.error().to_string().c_str());
      return;
    }
    r = Route{*msi, addr, data};
  } else if (r->address != addr || r->data != data) {
    auto s = ic_.update_msi(r->msi, addr, data);
    if (!s) {
      std::fprintf(stderr, "msix: vector %u: %s\n", v, s.error().to_string().c_str());
      return;
    }
    r->address = addr;
    r->data = data;
  }
  if (pending_[v]) {
    pending_[v] = false;
    fire(*r);
  }
}

void Msix::fire(const Route& r) const {
  uint64_t one = 1;
  ssize_t n = ::write(r.msi.irqfd, &one, sizeof one);
  (void)n;  // a full eventfd counter still has the interrupt raised
}

void Msix::notify(uint16_t vector) {
  if (vector >= vectors_) return;
  std::lock_guard lock(mu_);
  auto& r = routes_[vector];
  if (enabled_ && !function_masked_ && !entry_masked(vector) && r) {
    fire(*r);
  } else {
    pending_[vector] = true;
  }
}

bool Msix::enabled() const {
  std::lock_guard lock(mu_);
  return enabled_;
}

bool Msix::pending(uint16_t vector) const {
  std::lock_guard lock(mu_);
  return vector < vectors_ && pending_[vector];
}

}  // namespace vmm
