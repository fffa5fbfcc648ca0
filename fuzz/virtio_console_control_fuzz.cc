// libFuzzer target: a hostile guest driver talking to the virtio-console multiport control
// protocol (virtio/console/control.h), interleaved with what the host side does (a port's host
// end going or coming back, a terminal resize) and device resets. The device must refuse what it
// should, never crash, and only ever say true things: every message it sends names a configured
// port, is an event a device sends, carries a port's own name or the console's size, and
// survives encode/decode unchanged.
//
// Input: byte 0 picks the configuration (bit 0: a console on port 0; bits 1-2: 0-3 named ports),
// then records, each an opcode byte and its operands:
//   op % 4 == 0: a driver message: a length byte (0-16) and that many bytes (decode_control)
//   op % 4 == 1: host end of port (byte % 5) connected (bit 0 of the next byte)
//   op % 4 == 2: resize to cols, rows (le16 each)
//   op % 4 == 3: device reset
// testdata/fuzz/make-console-seeds.py writes the seeds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "virtio/console/control.h"

namespace {

namespace vc = vmm::virtio::console;

struct Reader {
  const uint8_t* p;
  size_t n;
  bool take(size_t k, const uint8_t** out) {
    if (n < k) return false;
    *out = p;
    p += k;
    n -= k;
    return true;
  }
};

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool console = data[0] & 1;
  const unsigned named = (data[0] >> 1) & 3;
  std::vector<vc::PortDesc> ports;
  if (console) ports.push_back({0, "", true});
  for (unsigned i = 1; i <= named; ++i) ports.push_back({i, "port." + std::to_string(i), false});
  if (ports.empty()) return 0;
  const std::vector<vc::PortDesc> config = ports;
  vc::PortControl pc(ports, 80, 24);
  uint16_t cols = 80, rows = 24;

  Reader r{data + 1, size - 1};
  const uint8_t* b;
  while (r.take(1, &b)) {
    std::vector<vc::ControlMsg> out;
    switch (*b % 4) {
      case 0: {
        const uint8_t* len;
        if (!r.take(1, &len)) return 0;
        const uint8_t* msg;
        if (!r.take(*len % 17u, &msg)) return 0;
        auto m = vc::decode_control({msg, *len % 17u});
        if (!m) {
          check(*len % 17u < vc::ctl::kHeaderSize);
          break;
        }
        auto s = pc.on_driver(*m, out);
        if (!s) check(out.empty() && !s.error().message().empty());
        break;
      }
      case 1: {
        const uint8_t* a;
        if (!r.take(2, &a)) return 0;
        pc.set_host_connected(a[0] % 5u, a[1] & 1, out);
        check(out.size() <= 1);
        break;
      }
      case 2: {
        const uint8_t* a;
        if (!r.take(4, &a)) return 0;
        cols = static_cast<uint16_t>(a[0] | a[1] << 8);
        rows = static_cast<uint16_t>(a[2] | a[3] << 8);
        pc.resize(cols, rows, out);
        check(out.size() <= 1);
        break;
      }
      case 3:
        pc.reset();
        break;
    }
    // At most a PORT_ADD per port, or the four announcements of one port.
    check(out.size() <= std::max<size_t>(config.size(), 4));
    for (const vc::ControlMsg& m : out) {
      const vc::PortDesc* p = nullptr;
      for (const vc::PortDesc& d : config)
        if (d.id == m.id) p = &d;
      check(p != nullptr);
      switch (m.event) {
        case vc::ctl::kDeviceAdd:
          check(m.value == 1 && m.extra.empty());
          break;
        case vc::ctl::kConsolePort:
          check(p->console && m.extra.empty());
          break;
        case vc::ctl::kResize:
          check(p->console && m.extra.size() == 4);
          check((m.extra[0] | m.extra[1] << 8) == cols && (m.extra[2] | m.extra[3] << 8) == rows);
          break;
        case vc::ctl::kPortName:
          check(!p->name.empty() && std::string(m.extra.begin(), m.extra.end()) == p->name);
          break;
        case vc::ctl::kPortOpen:
          check(m.value <= 1 && m.extra.empty() && pc.port_ready(m.id));
          break;
        default:
          std::abort();  // not an event a device sends
      }
      auto back = vc::decode_control(vc::encode_control(m));
      check(back && *back == m);
    }
    for (const vc::PortDesc& d : config) check(!pc.guest_open(d.id) || pc.port_ready(d.id));
  }
  return 0;
}
