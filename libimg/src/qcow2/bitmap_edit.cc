// qemu-img bitmap --add / --remove / --clear / --enable / --disable on the persistent bitmaps of
// an open image (spec: "Bitmaps", "Bitmaps extension", "Bitmap directory", "Bitmap table"), with
// QEMU 7.2's rules and messages (block/dirty-bitmap.c, block/qcow2-bitmap.c).
//
// Crash safety, as for snapshots: the new directory (and, for add and clear, a new bitmap table
// of zeros) is written to newly allocated clusters, its refcounts made durable, and the header
// rewrite that names it is the commit point; only then are the old directory, the old table and
// the data clusters of a removed or cleared bitmap freed. A cut anywhere leaves the old bitmaps
// or the new ones, with leaked clusters at worst.
#include <cinttypes>

#include "img/qcow2.h"
#include "qcow2/bitmap.h"
#include "qcow2/driver.h"

namespace img::qcow2 {

namespace {

std::vector<uint8_t> encode_directory(const std::vector<BitmapDirEntry>& entries) {
  std::vector<uint8_t> out;
  for (const BitmapDirEntry& e : entries) {
    const size_t at = out.size();
    out.resize(at + align_up(uint64_t{kBitmapDirEntryFixedSize} + e.name.size(), 8), 0);
    uint8_t* p = out.data() + at;
    store_be64(p, e.table_offset);
    store_be32(p + 8, e.table_size);
    store_be32(p + 12, e.flags);
    p[16] = e.type;
    p[17] = e.granularity_bits;
    store_be16(p + 18, static_cast<uint16_t>(e.name.size()));
    store_be32(p + 20, 0);  // no extra data
    std::memcpy(p + kBitmapDirEntryFixedSize, e.name.data(), e.name.size());
  }
  return out;
}

}  // namespace

Task<Status> Qcow2Image::edit_bitmap(const std::string& name, const BitmapEdit& edit) {
  const std::string& file = file_->name();
  // "Can't make bitmap 'x' persistent in '...': ..." is how QEMU refuses to store a new one.
  auto cannot_store = [&](const std::string& why) {
    return invalid_argument(strfmt("Can't make bitmap '%s' persistent in '%s': %s", name.c_str(),
                                   file.c_str(), why.c_str()));
  };
  if (edit.op == BitmapEdit::Op::kAdd && h_.version < 3) {
    co_return cannot_store("Cannot store dirty bitmaps in qcow2 v2 files");
  }
  CO_RETURN_IF_ERROR(co_await quiesce("bitmap"));
  std::vector<uint8_t> old_dir;
  BitmapsExtension old_ext;
  CO_ASSIGN_OR_RETURN(std::vector<BitmapDirEntry> entries,
                      co_await read_bitmap_directory(*file_, h_, &old_dir, &old_ext));
  const bool had_directory = !old_dir.empty();
  auto it = std::find_if(entries.begin(), entries.end(),
                         [&](const BitmapDirEntry& e) { return e.name == name; });
  auto not_found = [&] { return invalid_argument("Dirty bitmap '" + name + "' not found"); };
  auto inconsistent = [&] {
    return invalid_argument("Bitmap '" + name +
                            "' is inconsistent and cannot be used\nTry block-dirty-bitmap-remove "
                            "to delete this bitmap from disk");
  };
  // What the commit frees: (offset, bytes) ranges, and bitmap tables whose data clusters go too.
  std::vector<std::pair<uint64_t, uint64_t>> freed;
  std::vector<BitmapDirEntry> freed_tables;
  std::vector<std::pair<uint64_t, uint64_t>> written;  // given back if the commit fails
  auto zero_table = [&](uint32_t entries_n) -> Task<Result<uint64_t>> {
    std::vector<uint8_t> zeros(uint64_t{entries_n} * 8, 0);
    CO_ASSIGN_OR_RETURN(uint64_t off, co_await write_new(zeros));
    written.push_back({off, zeros.size()});
    co_return off;
  };
  switch (edit.op) {
    case BitmapEdit::Op::kAdd: {
      if (it != entries.end()) co_return invalid_argument("Bitmap already exists: " + name);
      const uint64_t g =
          edit.granularity ? edit.granularity : std::max<uint64_t>(4096, cluster_size_);
      if (g < 512 || !std::has_single_bit(g)) {
        co_return invalid_argument("Granularity must be power of 2 and at least 512");
      }
      if (g > (uint64_t{1} << kMaxBitmapGranularityBits)) {
        co_return cannot_store(
            strfmt("Granularity exceeds maximum (%llu bytes)",
                   (unsigned long long)(uint64_t{1} << kMaxBitmapGranularityBits)));
      }
      if (name.empty() || name.size() > kMaxBitmapNameSize) {
        co_return cannot_store(
            strfmt("Name length exceeds maximum (%u characters)", kMaxBitmapNameSize));
      }
      if (entries.size() >= kMaxBitmaps) {
        co_return cannot_store("Maximum number of persistent bitmaps is already reached");
      }
      const uint64_t bits = std::max<uint64_t>(1, div_round_up(h_.size, g));
      const uint64_t table_size = div_round_up(bits, cluster_size_ * 8);
      if (table_size > kMaxBitmapTableEntries || table_size * cluster_size_ > kMaxBitmapPhysBytes) {
        co_return cannot_store("Too large bitmap");
      }
      BitmapDirEntry e;
      e.table_size = static_cast<uint32_t>(table_size);
      e.flags = edit.disabled ? 0 : kBitmapFlagAuto;
      e.type = kBitmapTypeDirtyTracking;
      e.granularity_bits = static_cast<uint8_t>(std::countr_zero(g));
      e.name = name;
      CO_ASSIGN_OR_RETURN(e.table_offset, co_await zero_table(e.table_size));
      entries.push_back(std::move(e));
      break;
    }
    case BitmapEdit::Op::kRemove:
      if (it == entries.end()) co_return not_found();
      freed.push_back({it->table_offset, uint64_t{it->table_size} * 8});
      freed_tables.push_back(*it);
      entries.erase(it);
      break;
    case BitmapEdit::Op::kClear: {
      if (it == entries.end()) co_return not_found();
      if (it->flags & kBitmapFlagInUse) co_return inconsistent();
      freed.push_back({it->table_offset, uint64_t{it->table_size} * 8});
      freed_tables.push_back(*it);
      CO_ASSIGN_OR_RETURN(it->table_offset, co_await zero_table(it->table_size));
      break;
    }
    case BitmapEdit::Op::kEnable:
    case BitmapEdit::Op::kDisable:
      if (it == entries.end()) co_return not_found();
      if (it->flags & kBitmapFlagInUse) co_return inconsistent();
      if (edit.op == BitmapEdit::Op::kEnable) {
        it->flags |= kBitmapFlagAuto;
      } else {
        it->flags &= ~kBitmapFlagAuto;
      }
      break;
  }
  if (had_directory) freed.push_back({old_ext.directory_offset, old_ext.directory_size});

  // The new directory and the header that names it (none at all once the last bitmap is gone,
  // as QEMU leaves the image).
  Header h = h_;
  std::erase_if(h.other_extensions, [](const HeaderExtension& e) { return e.type == kExtBitmaps; });
  h.autoclear_features &= ~kAutoclearBitmaps;
  if (!entries.empty()) {
    std::vector<uint8_t> dir = encode_directory(entries);
    auto dir_off = co_await write_new(dir);
    if (!dir_off) {
      co_await give_back_unreferenced(written);
      co_return Unexpected(std::move(dir_off).error());
    }
    written.push_back({*dir_off, dir.size()});
    HeaderExtension ext{.type = kExtBitmaps, .data = std::vector<uint8_t>(kBitmapExtensionSize)};
    store_be32(ext.data.data(), static_cast<uint32_t>(entries.size()));
    store_be64(ext.data.data() + 8, dir.size());
    store_be64(ext.data.data() + 16, *dir_off);
    h.other_extensions.push_back(std::move(ext));
    h.autoclear_features |= kAutoclearBitmaps;
  }
  Status s = co_await settle_refcounts();
  if (s) s = co_await rewrite_header(std::move(h));
  if (!s) {
    co_await give_back_unreferenced(written);
    co_return s;
  }
  // Committed: the old directory and tables, and the data of removed or cleared bitmaps, are
  // unreferenced now. A data cluster entry that is not a valid cluster inside the file is left
  // alone (a leak, never a wrong free).
  CO_ASSIGN_OR_RETURN(uint64_t fsize, file_->size());
  for (const BitmapDirEntry& t : freed_tables) {
    std::vector<uint8_t> table(uint64_t{t.table_size} * 8);
    if (t.table_offset > fsize || table.size() > fsize - t.table_offset) continue;
    CO_RETURN_IF_ERROR(
        co_await file_->read_exact(t.table_offset, table.data(), table.size(), "bitmap table"));
    for (size_t i = 0; i < t.table_size; ++i) {
      const uint64_t e = load_be64(&table[i * 8]);
      const uint64_t off = e & kBitmapTableOffsetMask;
      if (off == 0 || (e & kBitmapTableReservedMask) || !is_aligned(off, cluster_size_) ||
          off >= fsize || overlaps_metadata(off, cluster_size_)) {
        continue;
      }
      freed.push_back({off, cluster_size_});
    }
  }
  {
    auto guard = co_await alloc_mu_.lock();
    for (auto [off, bytes] : freed) {
      if (off == 0 || bytes == 0 || overlaps_metadata(off, bytes)) continue;
      CO_RETURN_IF_ERROR(co_await free_clusters(off, div_round_up(bytes, cluster_size_)));
    }
  }
  // Bitmaps left consistent are marked in_use again before the next change of guest data.
  bitmaps_unmarked_ = !read_only_ && std::any_of(entries.begin(), entries.end(), [](const auto& e) {
    return !(e.flags & kBitmapFlagInUse);
  });
  co_return co_await flush();
}

Task<Status> edit_qcow2_bitmap(BlockDriver& d, const std::string& name, const BitmapEdit& edit) {
  auto* q = dynamic_cast<Qcow2Image*>(&d);
  if (!q) {
    // QEMU's words (bdrv_can_store_new_dirty_bitmap), the file named instead of the node.
    if (edit.op != BitmapEdit::Op::kAdd) {
      co_return invalid_argument("Dirty bitmap '" + name + "' not found");
    }
    co_return make_error(
        ErrorCode::kNotSupported,
        strfmt("Can't store persistent bitmaps to '%s': Operation not supported", d.format_name()),
        0);
  }
  co_return co_await q->edit_bitmap(name, edit);
}

}  // namespace img::qcow2

namespace img {

Task<Status> edit_bitmap(BlockDriver& d, const std::string& name, const BitmapEdit& edit) {
  co_return co_await qcow2::edit_qcow2_bitmap(d, name, edit);
}

}  // namespace img
