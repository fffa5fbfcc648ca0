// The snapshot table codec (see snapshot_table.h; spec: "Snapshots").
#include "qcow2/snapshot_table.h"

#include <algorithm>
#include <cinttypes>
#include <cstring>

#include "qcow2/layout.h"

namespace img::qcow2 {

Result<std::vector<SnapshotEntry>> decode_snapshot_table(std::span<const uint8_t> buf, uint32_t nb,
                                                         uint64_t image_size,
                                                         uint64_t* table_bytes) {
  if (nb > kMaxSnapshots) {
    return corruption(strfmt("nb_snapshots %u exceeds %" PRIu64, nb, kMaxSnapshots));
  }
  std::vector<SnapshotEntry> out;
  out.reserve(nb);
  uint64_t off = 0;
  // A read of [off, off+n) inside the 64 MiB bound; bytes past buf (the end of the file) are 0.
  auto copy = [&](uint64_t at, void* dst, uint64_t n) {
    std::memset(dst, 0, n);
    if (at < buf.size()) std::memcpy(dst, buf.data() + at, std::min<uint64_t>(n, buf.size() - at));
  };
  for (uint32_t i = 0; i < nb; ++i) {
    off = align_up(off, 8);
    uint8_t fixed[kSnapshotEntryFixed];
    if (off + kSnapshotEntryFixed > kMaxSnapshotTableBytes) {
      return corruption(strfmt("snapshot table is too big (entry %u starts past %" PRIu64 " MiB)",
                               i, kMaxSnapshotTableBytes >> 20));
    }
    copy(off, fixed, sizeof fixed);
    SnapshotEntry s;
    s.l1_table_offset = load_be64(fixed);
    s.l1_size = load_be32(fixed + 8);
    const uint64_t id_size = load_be16(fixed + 12);
    const uint64_t name_size = load_be16(fixed + 14);
    s.date_sec = load_be32(fixed + 16);
    s.date_nsec = load_be32(fixed + 20);
    s.vm_clock_nsec = load_be64(fixed + 24);
    s.vm_state_size = load_be32(fixed + 32);
    const uint64_t extra = load_be32(fixed + 36);
    if (extra > kMaxSnapshotExtraData) {
      return corruption(strfmt("too much extra metadata in snapshot table entry %u (%" PRIu64
                               " bytes, at most %" PRIu64 ")",
                               i, extra, kMaxSnapshotExtraData));
    }
    // A version 3 entry without disk_size is "incomplete" (check reports it) but, as in QEMU,
    // still usable: it gets the image's size, and the next table write completes it.
    const uint64_t end = off + kSnapshotEntryFixed + extra + id_size + name_size;
    if (end > kMaxSnapshotTableBytes) {
      return corruption(strfmt("snapshot table is too big (entry %u ends past %" PRIu64 " MiB)", i,
                               kMaxSnapshotTableBytes >> 20));
    }
    uint8_t ex[kMaxSnapshotExtraData];
    const uint64_t ex_off = off + kSnapshotEntryFixed;
    copy(ex_off, ex, extra);
    if (extra >= 8) s.vm_state_size = load_be64(ex);
    s.disk_size = extra >= 16 ? load_be64(ex + 8) : image_size;
    s.icount = extra >= 24 ? load_be64(ex + 16) : kNoIcount;
    if (extra > kSnapshotExtraWritten) {
      s.unknown_extra.assign(ex + kSnapshotExtraWritten, ex + extra);
    }
    s.id.resize(id_size);
    copy(ex_off + extra, s.id.data(), id_size);
    s.name.resize(name_size);
    copy(ex_off + extra + id_size, s.name.data(), name_size);
    out.push_back(std::move(s));
    off = end;
  }
  *table_bytes = off;
  return out;
}

Task<Result<std::vector<SnapshotEntry>>> read_snapshot_table(File& f, const Header& h,
                                                             uint64_t* table_bytes) {
  *table_bytes = 0;
  if (h.nb_snapshots == 0) co_return std::vector<SnapshotEntry>{};
  CO_ASSIGN_OR_RETURN(uint64_t file_size, f.size());
  // decode_header checked that the table starts inside the file. Its length is bounded by the
  // file and by the 64 MiB limit, and also by what nb entries can use at most (each at most
  // 40 + 1024 + 2 * 65535 bytes plus padding), so a few entries never read 64 MiB.
  const uint64_t per_entry_max =
      align_up(kSnapshotEntryFixed + kMaxSnapshotExtraData + 2 * 65535, 8);
  uint64_t want = std::min({kMaxSnapshotTableBytes, file_size - h.snapshots_offset,
                            uint64_t{h.nb_snapshots} * per_entry_max});
  std::vector<uint8_t> buf(want);
  CO_ASSIGN_OR_RETURN(uint64_t got, co_await f.read(h.snapshots_offset, buf.data(), buf.size()));
  buf.resize(got);
  auto r = decode_snapshot_table(buf, h.nb_snapshots, h.size, table_bytes);
  if (!r) r.error().prepend(f.name());
  co_return r;
}

Result<std::vector<uint8_t>> encode_snapshot_table(const std::vector<SnapshotEntry>& entries) {
  if (entries.size() > kMaxSnapshots) {
    return invalid_argument(strfmt("at most %" PRIu64 " snapshots", kMaxSnapshots));
  }
  uint64_t size = 0;
  for (const auto& s : entries) {
    if (s.id.size() > 65535 || s.name.size() > 65535) {
      return invalid_argument("snapshot id and name are at most 65535 bytes");
    }
    size = align_up(size, 8) + kSnapshotEntryFixed + kSnapshotExtraWritten +
           s.unknown_extra.size() + s.id.size() + s.name.size();
  }
  if (size > kMaxSnapshotTableBytes) {
    return invalid_argument(
        strfmt("the snapshot table would exceed %" PRIu64 " MiB", kMaxSnapshotTableBytes >> 20));
  }
  std::vector<uint8_t> out(size, 0);
  uint64_t off = 0;
  for (const auto& s : entries) {
    off = align_up(off, 8);
    uint8_t* p = out.data() + off;
    store_be64(p, s.l1_table_offset);
    store_be32(p + 8, s.l1_size);
    store_be16(p + 12, static_cast<uint16_t>(s.id.size()));
    store_be16(p + 14, static_cast<uint16_t>(s.name.size()));
    store_be32(p + 16, s.date_sec);
    store_be32(p + 20, s.date_nsec);
    store_be64(p + 24, s.vm_clock_nsec);
    // A state that does not fit 32 bits reads as 0 to old readers (QEMU does the same), which
    // then treat the snapshot as disk-only rather than truncate the state.
    store_be32(p + 32, s.vm_state_size <= UINT32_MAX ? static_cast<uint32_t>(s.vm_state_size) : 0);
    const uint64_t extra = kSnapshotExtraWritten + s.unknown_extra.size();
    store_be32(p + 36, static_cast<uint32_t>(extra));
    store_be64(p + 40, s.vm_state_size);
    store_be64(p + 48, s.disk_size);
    store_be64(p + 56, s.icount);
    uint8_t* q = p + kSnapshotEntryFixed + kSnapshotExtraWritten;
    if (!s.unknown_extra.empty()) std::memcpy(q, s.unknown_extra.data(), s.unknown_extra.size());
    q += s.unknown_extra.size();
    if (!s.id.empty()) std::memcpy(q, s.id.data(), s.id.size());
    q += s.id.size();
    if (!s.name.empty()) std::memcpy(q, s.name.data(), s.name.size());
    off += kSnapshotEntryFixed + extra + s.id.size() + s.name.size();
  }
  return out;
}

Status check_snapshot_l1(const SnapshotEntry& s, uint64_t cs, uint64_t file_size) {
  const uint64_t bytes = uint64_t{s.l1_size} * 8;
  if (bytes > kMaxL1Bytes) {
    return corruption(
        strfmt("snapshot '%s' (id %s): L1 table of %u entries exceeds the 32 MiB "
               "limit",
               s.name.c_str(), s.id.c_str(), s.l1_size));
  }
  if (s.l1_size == 0) return {};
  if (!is_aligned(s.l1_table_offset, cs) || s.l1_table_offset < cs ||
      s.l1_table_offset > file_size || bytes > file_size - s.l1_table_offset) {
    return corruption(strfmt("snapshot '%s' (id %s): L1 table offset 0x%" PRIx64
                             " (%u entries) is invalid",
                             s.name.c_str(), s.id.c_str(), s.l1_table_offset, s.l1_size));
  }
  return {};
}

}  // namespace img::qcow2
