// PCI wiring: the host bridge, one virtio-blk-pci function per --disk, then virtio-rng (--rng)
// and virtio-console (--console), one virtio-net per --net,
// then virtio-balloon (--balloon), then one virtio-scsi controller whose LUNs are the --scsi
// images in order. Each virtio device is a VirtioDevice wrapped in the same
// virtio-pci transport.
#include <cstdio>

#include "hostnet/netlink.h"
#include "machine/machine.h"
#include "pci/pci_bus.h"
#include "virtio/balloon/balloon_device.h"
#include "virtio/blk/blk_pci.h"
#include "virtio/console/console_device.h"
#include "virtio/net/net_device.h"
#include "virtio/rng/rng_device.h"
#include "virtio/scsi/scsi_device.h"
#include "virtio/virtio_pci.h"

namespace vmm {

img::Status Machine::setup_pci_devices(const MachineConfig& c) {
  auto pci = std::make_shared<PciBus>(mmio_, kPciHoleStart, kPciHoleEnd);
  RETURN_IF_ERROR(pio_.insert(0xcf8, 8, pci));
  devices_.push_back(pci);
  for (size_t i = 0; i < c.disks.size(); ++i) {
    const DiskSpec& d = c.disks[i];
    BlkConfig bc;
    bc.path = d.path;
    bc.format = d.format;
    bc.read_only = d.read_only;
    bc.direct = d.direct;
    bc.serial = img::strfmt("vmm-disk%zu", i);
    auto dev = make_virtio_blk_pci_device(bc, ram_.memory(), *irq_, *ioevents_);
    if (!dev) return img::Unexpected(dev.error().prepend("--disk " + d.path));
    RETURN_IF_ERROR(pci->add_device(dev->pci));
    virtio_.push_back(dev->pci);
    disks_.push_back(Disk{d.path, dev->blk, dev->pci});
    device_names_.push_back("virtio-blk");
  }
  if (c.rng) {
    virtio::rng::RngOptions o;
    o.rate = c.rng->rate;
    o.max_request = c.rng->max_request;
    auto dev = virtio::rng::RngDevice::create(o);
    if (!dev) return img::Unexpected(dev.error().prepend("--rng"));
    ASSIGN_OR_RETURN(
        auto p, virtio::VirtioPciDevice::create(std::move(*dev), ram_.memory(), *irq_, *ioevents_));
    virtio_.push_back(p);
    device_names_.push_back("virtio-rng");
    RETURN_IF_ERROR(pci->add_device(std::move(p)));
  }
  if (c.console || !c.serial_ports.empty()) {
    namespace vcon = virtio::console;
    using Kind = vcon::ConsoleHostSpec::Kind;
    vcon::ConsoleOptions o;
    o.has_console = c.console.has_value();
    if (c.console) {
      o.host.kind = c.console->kind == ConsoleSpec::Kind::kStdio  ? Kind::kStdio
                    : c.console->kind == ConsoleSpec::Kind::kFile ? Kind::kFile
                                                                  : Kind::kSocket;
      o.host.path = c.console->path;
    }
    for (const SerialPortSpec& sp : c.serial_ports) {
      o.ports.push_back({sp.name, {sp.file ? Kind::kFile : Kind::kSocket, sp.path, -1, -1}});
    }
    auto dev = vcon::ConsoleDevice::create(o);
    if (!dev) {
      return img::Unexpected(dev.error().prepend(c.console ? "--console" : "--serial-port"));
    }
    // SIGWINCH reaches the console through the main loop (serve_events) when it is a terminal.
    if (c.console && c.console->kind == ConsoleSpec::Kind::kStdio) virtio_console_ = dev->get();
    ASSIGN_OR_RETURN(
        auto p, virtio::VirtioPciDevice::create(std::move(*dev), ram_.memory(), *irq_, *ioevents_));
    virtio_.push_back(p);
    device_names_.push_back("virtio-console");
    RETURN_IF_ERROR(pci->add_device(std::move(p)));
  }
  for (const NetSpec& n : c.nets) {
    namespace vn = virtio::net;
    vn::NetOptions o;
    o.tap.kind = n.tap.empty() ? vn::TapSpec::Kind::kCreate : vn::TapSpec::Kind::kExisting;
    o.tap.name = n.tap;
    o.mac = n.mac;
    if (!n.network.empty()) {
      return img::invalid_argument("--net network=" + n.network +
                                   ": a named network is for defined VMs (vmm start); vmm run "
                                   "takes bridge=BR");
    }
    if (!n.bridge.empty()) {
      // Before the tap exists, so that a missing bridge leaves nothing behind to explain.
      ASSIGN_OR_RETURN(auto br, hostnet::find_link(n.bridge));
      if (!br) {
        return img::invalid_argument("--net: bridge " + n.bridge +
                                     " does not exist (make it: vmm net-define and net-start, "
                                     "or ip link add " +
                                     n.bridge + " type bridge)");
      }
      if (br->kind != "bridge")
        return img::invalid_argument("--net: " + n.bridge + " is not a bridge");
    }
    auto dev = vn::NetDevice::create(o);
    if (!dev) return img::Unexpected(dev.error().prepend("--net"));
    if (!n.bridge.empty()) {
      // The tap is ours and goes when vmm exits, leaving the bridge by itself.
      if (auto st = hostnet::set_master((*dev)->tap_name(), n.bridge); !st) {
        return img::Unexpected(st.error().prepend("--net"));
      }
    }
    // A tap we made has a name only the kernel knew: the user needs it to wire the host side.
    std::fprintf(stderr, "vmm: --net: %s tap %s%s, guest MAC %s\n",
                 n.tap.empty() ? "created" : "attached to", (*dev)->tap_name().c_str(),
                 n.bridge.empty() ? "" : (" on bridge " + n.bridge).c_str(),
                 vn::format_mac((*dev)->mac()).c_str());
    nics_.push_back({(*dev)->tap_name(), n.bridge, vn::format_mac((*dev)->mac()), dev->get()});
    ASSIGN_OR_RETURN(
        auto p, virtio::VirtioPciDevice::create(std::move(*dev), ram_.memory(), *irq_, *ioevents_));
    virtio_.push_back(p);
    device_names_.push_back("virtio-net");
    RETURN_IF_ERROR(pci->add_device(std::move(p)));
  }
  if (c.balloon) {
    namespace vb = virtio::balloon;
    vb::BalloonOptions o;
    if (c.balloon->target) o.num_pages = (c.memory - *c.balloon->target) / vb::kPageSize;
    o.stats_interval = std::chrono::seconds(c.balloon->stats_seconds);
    auto dev = vb::BalloonDevice::create(o);
    if (!dev) return img::Unexpected(dev.error().prepend("--balloon"));
    balloon_ = dev->get();  // owned by its transport, which the PCI bus keeps for the VM's life
    ASSIGN_OR_RETURN(
        auto p, virtio::VirtioPciDevice::create(std::move(*dev), ram_.memory(), *irq_, *ioevents_));
    virtio_.push_back(p);
    device_names_.push_back("virtio-balloon");
    RETURN_IF_ERROR(pci->add_device(std::move(p)));
  }
  if (!c.scsi.empty()) {
    namespace vs = virtio::scsi;
    std::vector<vs::ScsiDiskConfig> cfgs;
    for (const ScsiSpec& d : c.scsi) {
      cfgs.push_back({d.path, d.format, d.read_only, d.direct, d.write_cache});
    }
    auto dev = vs::make_scsi_device(cfgs);
    if (!dev) return img::Unexpected(dev.error().prepend("--scsi"));
    ASSIGN_OR_RETURN(
        auto p, virtio::VirtioPciDevice::create(std::move(*dev), ram_.memory(), *irq_, *ioevents_));
    virtio_.push_back(p);
    scsi_pci_ = p;
    for (const ScsiSpec& d : c.scsi) scsi_paths_.push_back(d.path);
    device_names_.push_back("virtio-scsi");
    RETURN_IF_ERROR(pci->add_device(std::move(p)));
  }
  return {};
}

}  // namespace vmm
