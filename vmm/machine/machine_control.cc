// The control socket's commands on a running Machine (docs/vmm-control.md). They run on the
// run() thread, between the main loop's events; each returns a reply object or a ControlError.
//
// shutdown and reboot press Ctrl-Alt-Del on the i8042 keyboard, as Firecracker's SendCtrlAltDel
// does: our ACPI is hardware-reduced (FADT flag HW_REDUCED_ACPI), which has no fixed power
// button, and a power button through a Generic Event Device would need an AML _EVT method and a
// userspace daemon (acpid, logind) to act on KEY_POWER, while the kernel acts on Ctrl-Alt-Del by
// itself (Linux: reboot, or SIGINT to init when init asked for it). After a shutdown request the
// VM ends when the guest resets or powers off; after a reboot request either restarts the machine
// in place (machine_reset.cc), as `reset` does at once without asking the guest.
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>

#include "machine/machine.h"
#include "virtio/balloon/balloon_device.h"
#include "virtio/blk/blk_device.h"
#include "virtio/net/net_device.h"
#include "virtio/scsi/scsi_device.h"
#include "virtio/virtio_pci.h"

namespace vmm {
namespace {

const char* state_name(bool paused) { return paused ? "paused" : "running"; }

}  // namespace

void Machine::add_commands() {
  using api::Json;
  dispatcher_.add("info", {}, [this](const Json&) { return info(); });
  dispatcher_.add("disk-stats", {}, [this](const Json&) { return disk_stats(); });
  dispatcher_.add("nic-stats", {}, [this](const Json&) { return nic_stats(); });
  dispatcher_.add("pause", {}, [this](const Json&) { return pause(); });
  dispatcher_.add("resume", {}, [this](const Json&) { return resume(); });
  dispatcher_.add("shutdown", {"timeout"}, [this](const Json& a) { return shutdown(a, false); });
  dispatcher_.add("reboot", {"timeout"}, [this](const Json& a) { return shutdown(a, true); });
  dispatcher_.add("balloon", {"value"}, [this](const Json& a) { return set_balloon(a); });
  dispatcher_.add("query-balloon", {}, [this](const Json&) { return query_balloon(); });
  dispatcher_.add("block_resize", {"index", "lun", "size"},
                  [this](const Json& a) { return block_resize(a); });
  dispatcher_.add("reset", {}, [this](const Json&) { return hard_reset(); });
  dispatcher_.add("destroy", {}, [this](const Json&) -> api::CommandResult {
    request_exit(kExitDestroyed, "destroyed over the control socket");
    return Json::object();
  });
}

api::CommandResult Machine::info() const {
  using api::Json;
  Json disks = Json::array();
  for (size_t i = 0; i < disks_.size(); ++i) {
    const Disk& d = disks_[i];
    disks.push_back({{"index", i},
                     {"path", d.path},
                     {"format", d.blk->format_name()},
                     {"size", d.blk->size()},
                     {"read_only", d.blk->read_only()}});
  }
  Json nics = Json::array();
  for (size_t i = 0; i < nics_.size(); ++i) {
    Json n = {{"index", i}, {"tap", nics_[i].tap}, {"mac", nics_[i].mac}};
    if (!nics_[i].bridge.empty()) n["bridge"] = nics_[i].bridge;
    nics.push_back(std::move(n));
  }
  double uptime =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  Json j{{"state", state_name(state_ == RunState::kPaused)},
         {"shutdown_requested", shutdown_requested_},
         {"vcpus", cpus_},
         {"memory", memory_},
         {"uptime_s", uptime},
         {"reboots", reboots_},
         {"on_reboot", on_reboot_name(on_reboot_)},
         {"disks", std::move(disks)},
         {"nics", std::move(nics)},
         {"devices", device_names_}};
  if (balloon_) {
    // As query-balloon reports them: the memory asked for and the memory the guest has.
    j["balloon"] = {
        {"target", memory_ - std::min<uint64_t>(memory_, uint64_t{balloon_->num_pages()} * 4096)},
        {"actual",
         memory_ - std::min<uint64_t>(memory_, uint64_t{balloon_->actual_pages()} * 4096)}};
  }
  return j;
}

api::CommandResult Machine::disk_stats() const {
  using api::Json;
  Json disks = Json::array();
  for (size_t i = 0; i < disks_.size(); ++i) {
    const virtio::blk::BlkStats& s = disks_[i].blk->stats();
    disks.push_back({{"index", i},
                     {"path", disks_[i].path},
                     {"reads", s.reads.load()},
                     {"read_bytes", s.read_bytes.load()},
                     {"writes", s.writes.load()},
                     {"write_bytes", s.write_bytes.load()},
                     {"flushes", s.flushes.load()},
                     {"discards", s.discards.load()},
                     {"write_zeroes", s.write_zeroes.load()},
                     {"errors", s.errors.load()}});
  }
  return Json{{"disks", std::move(disks)}};
}

api::CommandResult Machine::nic_stats() const {
  using api::Json;
  Json nics = Json::array();
  for (size_t i = 0; i < nics_.size(); ++i) {
    const virtio::net::NetStats& s = nics_[i].dev->stats();
    nics.push_back({{"index", i},
                    {"tap", nics_[i].tap},
                    {"rx_packets", s.rx_packets.load()},
                    {"rx_bytes", s.rx_bytes.load()},
                    {"rx_dropped", s.rx_dropped.load()},
                    {"tx_packets", s.tx_packets.load()},
                    {"tx_bytes", s.tx_bytes.load()},
                    {"tx_dropped", s.tx_dropped.load()},
                    {"tx_errors", s.tx_errors.load()}});
  }
  return Json{{"nics", std::move(nics)}};
}

api::CommandResult Machine::pause() {
  if (state_ == RunState::kPaused)
    return std::unexpected(api::wrong_state("the VM is already paused"));
  // vCPUs first, so no new notification arrives; then the devices drain and flush.
  for (auto& v : vcpus_) v->pause();
  for (auto& d : virtio_) {
    if (auto s = d->pause(); !s) {
      for (auto& r : virtio_) r->resume();
      for (auto& v : vcpus_) v->resume();
      return std::unexpected(api::internal_error("pause: " + s.error().to_string()));
    }
  }
  state_ = RunState::kPaused;
  return api::Json::object();
}

api::CommandResult Machine::resume() {
  if (state_ != RunState::kPaused) return std::unexpected(api::wrong_state("the VM is not paused"));
  for (auto& d : virtio_) d->resume();
  for (auto& v : vcpus_) v->resume();
  state_ = RunState::kRunning;
  return api::Json::object();
}

api::CommandResult Machine::shutdown(const api::Json& args, bool reboot) {
  auto timeout = api::number_arg(args, "timeout", 0, 86400);
  if (!timeout) return std::unexpected(timeout.error());
  if (state_ == RunState::kPaused) {
    return std::unexpected(
        api::wrong_state("the VM is paused and cannot react: resume it first, or destroy it"));
  }
  shutdown_requested_ = true;
  {
    std::lock_guard lock(mu_);
    request_ = reboot ? Request::kReboot : Request::kShutdown;
  }
  i8042_->press_ctrl_alt_del();
  if (*timeout) {
    // After the timeout the VM is destroyed: a guest that ignores the key does not keep running.
    if (shutdown_timer_.get() < 0) {
      shutdown_timer_ = Fd(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
      if (shutdown_timer_.get() < 0) {
        return std::unexpected(api::internal_error(img::strfmt("timerfd: %s", strerror(errno))));
      }
      auto st = loop_->add(shutdown_timer_.get(), EPOLLIN, [this](uint32_t) {
        request_exit(
            kExitDestroyed,
            img::strfmt("the guest did not shut down within %g s: destroyed", shutdown_timeout_s_));
      });
      if (!st) return std::unexpected(api::internal_error(st.error().to_string()));
    }
    shutdown_timeout_s_ = **timeout;
    itimerspec its{};
    int64_t ns = static_cast<int64_t>(**timeout * 1e9);
    its.it_value.tv_sec = ns / 1000000000;
    its.it_value.tv_nsec = ns % 1000000000;
    if (ns == 0) its.it_value.tv_nsec = 1;  // 0 would disarm: destroy at once
    ::timerfd_settime(shutdown_timer_.get(), 0, &its, nullptr);
  }
  return api::Json::object();
}

// QMP's system_reset (virsh reset): the power-on state at once, without the guest's say; the
// reset runs on this thread after the reply. A paused VM stays paused, reset.
api::CommandResult Machine::hard_reset() {
  request_reset("reset over the control socket");
  return api::Json::object();
}

// QMP's balloon: `value` is the memory the guest should keep, in bytes; the balloon asks for the
// rest, in 4 KiB pages (virtio 1.2 §5.5.6: num_pages). The guest's driver inflates or deflates
// toward it in its own time; query-balloon shows how far it got.
api::CommandResult Machine::set_balloon(const api::Json& args) {
  namespace vb = virtio::balloon;
  if (!balloon_)
    return std::unexpected(api::wrong_state("the VM has no balloon: start it with --balloon"));
  auto it = args.find("value");
  if (it == args.end())
    return std::unexpected(api::invalid_argument("balloon: 'value' (bytes) is required"));
  if (!it->is_number_unsigned() || it->get<uint64_t>() == 0) {
    return std::unexpected(
        api::invalid_argument("balloon: 'value' must be a positive integer (bytes)"));
  }
  uint64_t value = it->get<uint64_t>();
  if (value > memory_) {
    return std::unexpected(api::invalid_argument(img::strfmt(
        "balloon: 'value' %llu is more than the VM's memory (%llu bytes)",
        static_cast<unsigned long long>(value), static_cast<unsigned long long>(memory_))));
  }
  balloon_->set_num_pages(static_cast<uint32_t>((memory_ - value) / vb::kPageSize));
  return api::Json::object();
}

// The stats tags of virtio 1.2 §5.5.6.3, named as QEMU's qom-get guest-stats names them.
static const char* balloon_stat_name(uint16_t tag) {
  static const char* const names[] = {
      "stat-swap-in",      "stat-swap-out",     "stat-major-faults",     "stat-minor-faults",
      "stat-free-memory",  "stat-total-memory", "stat-available-memory", "stat-disk-caches",
      "stat-htlb-pgalloc", "stat-htlb-pgfail"};
  return tag < std::size(names) ? names[tag] : nullptr;
}

// QMP's query-balloon answers `actual`, the guest's memory minus what the balloon holds; the rest
// is ours: the target, the pages the host got back (MADV_DONTNEED), PFNs refused as not guest
// RAM, and the driver's last statistics (--balloon stats=SECONDS).
api::CommandResult Machine::query_balloon() const {
  namespace vb = virtio::balloon;
  if (!balloon_)
    return std::unexpected(api::wrong_state("the VM has no balloon: start it with --balloon"));
  api::Json stats = api::Json::object();
  for (const auto& [tag, value] : balloon_->stats()) {
    const char* n = balloon_stat_name(tag);
    stats[n ? std::string(n) : img::strfmt("stat-tag-%u", unsigned{tag})] = value;
  }
  uint64_t held = uint64_t{balloon_->actual_pages()} * vb::kPageSize;
  uint64_t wanted = uint64_t{balloon_->num_pages()} * vb::kPageSize;
  return api::Json{{"actual", held < memory_ ? memory_ - held : 0},
                   {"target", wanted < memory_ ? memory_ - wanted : 0},
                   {"balloon_pages", balloon_->actual_pages()},
                   {"discarded_pages", balloon_->discarded_pages()},
                   {"bad_pfns", balloon_->bad_pfns()},
                   {"partial_huge_pages", balloon_->partial_host_pages()},
                   {"stats", std::move(stats)}};
}

// Grows disk `index` (as info and disk-stats number them) to `size` bytes through libimg, with
// the disk's queues quiet around it, and tells the guest's driver (a configuration change).
api::CommandResult Machine::block_resize(const api::Json& args) {
  auto index = args.find("index");
  auto lun = args.find("lun");
  auto size = args.find("size");
  bool by_lun = lun != args.end();
  if (by_lun == (index != args.end()) || !(by_lun ? lun : index)->is_number_unsigned()) {
    return std::unexpected(api::invalid_argument(
        "block_resize: give 'index' (a virtio-blk disk's number in info) or 'lun' (a SCSI LUN)"));
  }
  if (size == args.end() || !size->is_number_unsigned() || size->get<uint64_t>() == 0) {
    return std::unexpected(
        api::invalid_argument("block_resize: 'size' must be a positive integer (bytes)"));
  }
  const uint64_t i = (by_lun ? lun : index)->get<uint64_t>();
  const size_t count = by_lun ? scsi_paths_.size() : disks_.size();
  if (i >= count) {
    return std::unexpected(api::invalid_argument(
        img::strfmt("block_resize: no %s %llu (the VM has %zu)", by_lun ? "SCSI LUN" : "disk",
                    (unsigned long long)i, count)));
  }
  const std::string& path = by_lun ? scsi_paths_[i] : disks_[i].path;
  uint64_t new_size = size->get<uint64_t>();
  uint64_t now = 0;
  img::Status s = (by_lun ? scsi_pci_ : disks_[i].pci)->with_device([&](virtio::VirtioDevice& dev) {
    if (by_lun) {
      auto& scsi = static_cast<virtio::scsi::ScsiDevice&>(dev);
      img::Status st = scsi.resize(i, new_size);
      now = scsi.lun_info(i).blocks * 512;
      return st;
    }
    auto& blk = static_cast<virtio::blk::BlkDevice&>(dev);
    img::Status st = blk.resize(new_size);
    now = blk.size();
    return st;
  });
  if (!s) {
    if (s.error().code() == img::ErrorCode::kInvalidArgument ||
        s.error().code() == img::ErrorCode::kReadOnly ||
        s.error().code() == img::ErrorCode::kNotSupported) {
      return std::unexpected(
          api::invalid_argument("block_resize: " + path + ": " + s.error().message()));
    }
    return std::unexpected(
        api::internal_error("block_resize: " + path + ": " + s.error().to_string()));
  }
  return api::Json{{by_lun ? "lun" : "index", i}, {"size", now}};
}

}  // namespace vmm
